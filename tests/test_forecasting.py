"""LSTMForecaster: river's forecaster API and checks, rollouts, exogenous features, resume."""

import math
import re

import numpy as np
import pytest
from river import checks, datasets, evaluate, metrics

import streamnn
from streamnn.evaluation.naive import LastValue, SeasonalNaive
from streamnn.forecasting import LSTMForecaster

AIRLINE = list(datasets.AirlinePassengers())


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


# -- MLPForecaster: the default forecaster ----------------------------------------------------

def seasonal_trend(n, seed=0, period=12):
    """A rising trend, a season whose amplitude grows with the level, and noise."""
    import random
    rng = random.Random(seed)
    return [(100 + 2 * t) * (1 + 0.15 * math.sin(2 * math.pi * t / period)) + rng.gauss(0, 2) for t in range(n)]


def test_mlp_forecaster_beats_last_value_on_a_seasonal_trend():
    ys = seasonal_trend(200)
    data = [(None, y) for y in ys]
    assert mae(streamnn.MLPForecaster(seed=0), data) < 0.6 * mae(LastValue(), data)


def test_mlp_forecaster_forecast_shape_and_purity():
    model = streamnn.MLPForecaster(seed=0, horizon=5)
    assert model.forecast(3) == [0.0, 0.0, 0.0]
    model.learn_one(7.0)
    assert model.forecast(2) == [7.0, 7.0]          # an untrained model forecasts the last value
    for y in seasonal_trend(60):
        model.learn_one(y)
    before = model.state_dict()
    f = model.forecast(12)                          # longer than `horizon`: rolled forward
    assert len(f) == 12 and all(isinstance(v, float) and math.isfinite(v) for v in f)
    assert model.forecast(12) == f and model.forecast(5) == f[:5]
    after = model.state_dict()
    assert (after["y"] == before["y"]).all() and after["n_seen"] == before["n_seen"]
    with pytest.raises(ValueError, match="one dict per step"):
        model.forecast(2, [{}])


def test_mlp_forecaster_state_round_trip_and_resume_exactly(tmp_path):
    ys = [y for _, y in AIRLINE]
    model = streamnn.MLPForecaster(seed=3, memory=10, horizon=12, window=6)   # old values are forgotten
    for y in ys[:60]:
        model.learn_one(y)
    copy_ = streamnn.MLPForecaster(seed=3, memory=10, horizon=12, window=6).load_state_dict(model.state_dict())
    model.save(tmp_path / "m.pt")
    loaded = streamnn.load(tmp_path / "m.pt")
    assert type(loaded) is streamnn.MLPForecaster and loaded.memory == 10
    assert model.forecast(12) == copy_.forecast(12) == loaded.forecast(12)
    for m in (model, copy_, loaded):
        for y in ys[60:90]:
            m.learn_one(y)
    assert model.forecast(12) == copy_.forecast(12) == loaded.forecast(12)
    with pytest.raises(ValueError, match="cannot be loaded"):
        LSTMForecaster().load_state_dict(model.state_dict())


def test_mlp_forecaster_seeds_and_members():
    ys = seasonal_trend(30)
    fits = []
    for seed in (0, 0, 1):
        m = streamnn.MLPForecaster(seed=seed, steps=2)
        for y in ys:
            m.learn_one(y)
        fits.append(m.forecast(4))
    assert fits[0] == fits[1] and fits[0] != fits[2]


def test_mlp_forecaster_numpy_step_matches_torch():
    """The numpy training step (CPU) against torch autograd + AdamW as the oracle."""
    import numpy as np
    import torch
    a, b = streamnn.MLPForecaster(seed=0, loss="huber"), streamnn.MLPForecaster(seed=0, loss="huber")
    for y in seasonal_trend(30):
        for m in (a, b):
            m._keep(y)
            m.n_seen_ += 1
    for m, step in ((a, a._numpy_step), (b, b._torch_step)):
        z, base, scale = m._windows(m.y_, np.arange(10, 20))
        target = (m.y_[np.arange(11, 21)][:, None] - base) / scale * np.ones((1, m.horizon))
        weight = np.ones_like(target)
        for _ in range(3):
            step(z, target, weight)
    for (name, p), q in zip(a.module_.named_parameters(), b.module_.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_mlp_forecaster_skips_non_finite_and_warns_on_unused_features():
    model = streamnn.MLPForecaster(seed=0)
    model.learn_one(float("nan"))
    assert model.n_seen_ == 0 and model.n_skipped_ == 1
    with pytest.warns(UserWarning, match="LSTMForecaster"):
        model.learn_one(1.0, {"temperature": 3.0})
    model.learn_one(2.0, {"month": AIRLINE[0][0]["month"]})     # timestamps: no warning needed


def _daily(n, period=48, seed=0):
    """A daily cycle of `period` values (taxi-like: two peaks a day) on a slow level, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (1000 + 400 * np.sin(2 * np.pi * t / period) + 150 * np.sin(4 * np.pi * t / period + 1)
            + 0.05 * t + rng.normal(0, 20, n)).tolist()


def test_the_window_reaches_a_season_beyond_it():
    """`window="auto"`: a period of 48 values (beyond the window of 18) widens it to 49 after 256
    values, and the forecasts beat the fixed window's by far (NAB's nyc_taxi: 3,307 -> 2,239,
    ahead of seasonal naive's 2,364; benchmarks/results/forecast.md)."""
    ys = _daily(1000)
    auto, seen = streamnn.MLPForecaster(seed=0, horizon=24), []
    for y in ys:
        auto.learn_one(y)
        seen.append(auto.window_)
    assert seen[254] == 18 and seen[255] == 49 and auto.season_ == 48   # decided at the 256th value
    data = [(None, y) for y in ys]
    a = mae(streamnn.MLPForecaster(seed=0, horizon=24), data, horizon=24)
    f = mae(streamnn.MLPForecaster(seed=0, horizon=24, window=18), data, horizon=24)
    sn = mae(SeasonalNaive(48), data, horizon=24)   # near the best forecast of a clean season:
    assert a < 0.8 * f and a < 1.6 * sn, (a, f, sn)  # measured 77.6, 108.9, 52.3 (nyc_taxi: below it)


def test_no_season_or_a_short_one_leaves_the_window_as_it_was():
    """A season the window already reaches (12), a random walk: the same forecasts as window=18."""
    rng = np.random.default_rng(1)
    for ys in (seasonal_trend(600), np.cumsum(rng.normal(size=1100)).tolist()):
        auto, fixed = streamnn.MLPForecaster(seed=2, horizon=6), streamnn.MLPForecaster(seed=2, horizon=6, window=18)
        for y in ys:
            auto.learn_one(y)
            fixed.learn_one(y)
        assert auto.window_ == 18 and auto.season_ == 0
        assert auto.forecast(6) == fixed.forecast(6)


def test_a_widened_forecaster_saves_and_loads_as_it_is(tmp_path):
    model = streamnn.MLPForecaster(seed=0, horizon=8)
    for y in _daily(300):
        model.learn_one(y)
    assert model.window_ == 49
    copy_ = streamnn.MLPForecaster(seed=0, horizon=8).load_state_dict(model.state_dict())
    assert copy_.window_ == 49 and copy_.season_ == 48 and copy_.forecast(8) == model.forecast(8)
    model.save(tmp_path / "f.ckpt")
    loaded = streamnn.load(tmp_path / "f.ckpt")
    for m in (model, loaded):
        m.learn_one(1234.0)
    assert loaded.forecast(8) == model.forecast(8)
    old = streamnn.MLPForecaster(seed=0, horizon=8)                  # a state written before the field: 18
    for y in _daily(100):
        old.learn_one(y)
    s = old.state_dict()
    del s["window"], s["season"]
    assert streamnn.MLPForecaster(seed=0, horizon=8).load_state_dict(s).forecast(8) == old.forecast(8)


@pytest.mark.parametrize("kw, match", [({"window": 1}, "window=1"), ({"window": "wide"}, "window='wide'"),
                                       ({"window": True}, "window=True"), ({"loss": "l2"}, "loss='l2'"),
                                       ({"recent": 64}, "recent=64"), ({"horizon": 0}, "horizon=0")])
def test_mlp_forecaster_bad_params_name_the_fix(kw, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        streamnn.MLPForecaster(**kw)


@pytest.mark.slow
def test_mlp_forecaster_defaults_beat_the_peers_on_airline():
    """river's ForecastingTrack protocol on AirlinePassengers (h=12): the default beats last value,
    seasonal naive and HoltWinters(.3, .1, .6, multiplicative), on two seeds."""
    import statistics
    from river import time_series

    def track(model):
        return evaluate.evaluate(AIRLINE, model, metrics.MAE(), horizon=12, agg_func=statistics.mean).get()

    hw = track(time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=12, multiplicative=True))
    ours = max(track(streamnn.MLPForecaster(seed=s)) for s in (0, 1))
    assert ours < hw < track(LastValue())


def _mlp_checks():
    for params in streamnn.MLPForecaster._unit_test_params():
        model = streamnn.MLPForecaster(**params, seed=1)
        for check in checks.yield_checks(model):
            yield pytest.param(model, check, id=f"mlp-{check.__name__}")


@pytest.mark.filterwarnings("ignore:MLPForecaster uses the series alone")
@pytest.mark.parametrize("model, check", list(_mlp_checks()))
def test_mlp_forecaster_river_check(model, check):
    check(model.clone())
