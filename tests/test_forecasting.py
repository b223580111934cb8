"""LSTMForecaster: river's forecaster API and checks, rollouts, exogenous features, resume."""

import math

import pytest
from river import checks, datasets, evaluate, metrics

import streamnn
from streamnn.forecasting import LSTMForecaster

AIRLINE = list(datasets.AirlinePassengers())


class LastValue:
    def learn_one(self, y, x=None):
        self.y = y

    def forecast(self, horizon, xs=None):
        return [self.y] * horizon


def mae(model, data, horizon=12):
    return sum(evaluate.evaluate(data, model, metrics.MAE(), horizon=horizon).get()) / horizon


def test_beats_last_value_on_airline_with_a_seasonal_lag():
    # the raw dataset: its datetime field is ignored, the series and its lags are used
    assert mae(LSTMForecaster(lags=(1, 12), seed=0), AIRLINE) < 0.8 * mae(LastValue(), AIRLINE)


@pytest.mark.parametrize("stateful", [True, False])
def test_forecast_is_pure_and_has_the_horizon(stateful):
    model = LSTMForecaster(hidden_size=8, seed=0, stateful=stateful, window=4, difference=not stateful)
    assert model.forecast(3) == [0.0, 0.0, 0.0]
    for t in range(50):
        model.learn_one(math.sin(t / 3), {"t": float(t)})
    before = model.state_dict()
    xs = [{"t": 50.0 + h} for h in range(5)]
    first = model.forecast(5, xs)
    assert len(first) == 5 and all(math.isfinite(v) for v in first)
    assert model.forecast(5, xs) == first
    after = model.state_dict()
    assert after["history"] == before["history"]
    assert (after["regressor"]["extra"]["keys"]["h"] == before["regressor"]["extra"]["keys"]["h"]).all()
    with pytest.raises(ValueError, match="one dict per step"):
        model.forecast(2, xs)


def test_uses_exogenous_features():
    """y follows an exogenous switch that no lag can anticipate."""
    def u(t):
        return 1.0 if (t // 7) % 3 == 0 else 0.0

    model = LSTMForecaster(seed=0, lr=0.02)
    for t in range(600):
        model.learn_one(5.0 * u(t), {"u": u(t)})
    xs = [{"u": u(t)} for t in range(600, 612)]
    pred = model.forecast(12, xs)
    err = sum(abs(p - 5.0 * x["u"]) for p, x in zip(pred, xs)) / 12
    assert err < 1.0, pred


def test_non_finite_values_are_skipped():
    model = LSTMForecaster(seed=0)
    model.learn_one(1.0)
    model.learn_one(float("nan"))
    assert model.n_seen_ == 1 and model.regressor_.n_skipped_ == 1


def test_state_round_trip_and_load_resume_exactly(tmp_path):
    make = lambda: LSTMForecaster(lags=(1, 3), hidden_size=8, seed=2, dropout=0.1)  # noqa: E731
    model = make()
    ys = [y for _, y in AIRLINE]
    for y in ys[:70]:
        model.learn_one(y)
    copy_ = make().load_state_dict(model.state_dict())
    model.save(tmp_path / "f.pt")
    loaded = streamnn.load(tmp_path / "f.pt")
    for m in (model, copy_, loaded):
        for y in ys[70:100]:
            m.learn_one(y)
    assert model.forecast(6) == copy_.forecast(6) == loaded.forecast(6)


def test_bad_lags_name_the_fix():
    with pytest.raises(ValueError, match=r"lags=.*\(1, 12\)"):
        LSTMForecaster(lags=(0,))


def _checks():
    for params in LSTMForecaster._unit_test_params():
        model = LSTMForecaster(**params, seed=1)
        for check in checks.yield_checks(model):
            yield pytest.param(model, check, id=f"{'stateful' if model.stateful else 'windowed'}-{check.__name__}")


@pytest.mark.parametrize("model, check", list(_checks()))
def test_river_check(model, check):
    check(model.clone())
