"""`LSTMForecaster`: a recurrent forecaster with river's forecaster API.

At each step t the network reads the recent values of the series (`lags`, e.g. y[t-1] and
y[t-12]) and the numeric exogenous features of x[t], and predicts y[t] (or, with
`difference=True`, the change y[t] - y[t-1]). It is an `LSTMRegressor` underneath, so the hidden
state is carried from step to step (`stateful=True`) or a window is re-run (`stateful=False`).
`forecast(horizon)` rolls a copy of the state forward, feeding each prediction back as the next
lag; it never changes the model.

Fields of x that are dates or times (river's time-series datasets carry one) are not features and
are ignored; encode them first (e.g. month as a number) to use them.

>>> from river import datasets, metrics
>>> from river import evaluate
>>> model = LSTMForecaster(lags=(1, 12), seed=0)
>>> mae = evaluate.evaluate(datasets.AirlinePassengers(), model, metrics.MAE(), horizon=12)
>>> len(model.forecast(horizon=3)), mae.get()[0] < 60
(3, True)
"""

from __future__ import annotations

import datetime as dt
import math
import numbers

from river.time_series.base import Forecaster

from .mlp_forecaster import MLPForecaster, SavedForecaster
from .regression import _finite
from .sequence import LSTMRegressor

__all__ = ["LSTMForecaster", "MLPForecaster"]

_TIME = (dt.date, dt.time, dt.timedelta)


class LSTMForecaster(SavedForecaster, Forecaster):
    """A streaming LSTM / GRU / RNN forecaster (`learn_one(y, x=None)`, `forecast(horizon, xs=None)`).

    Parameters
    ----------
    lags
        Past values fed at each step: `(1,)` is the last value, `(1, 12)` adds the value a season
        (12 steps) ago. The recurrent state carries everything older.
    difference
        Learn and forecast changes y[t] - y[t-1] (lags are then lagged changes); helps on
        trending series.
    cell, hidden_size, num_layers, dropout, stateful, window, bptt, many_to_many
        As in `streamnn.LSTMRegressor`.
    loss, optimizer, lr, batch_size, update_every, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `streamnn.LSTMRegressor`; series are short, so a step every `update_every=1`
        event is the default.

    Examples
    --------
    >>> model = LSTMForecaster(hidden_size=8, seed=1, lr=0.05)
    >>> for t in range(300):
    ...     model.learn_one(10.0 + (t % 4))          # 10, 11, 12, 13, 10, ...
    >>> [round(v) for v in model.forecast(horizon=4)]
    [10, 11, 12, 13]
    """

    def __init__(self, lags: tuple = (1,), difference: bool = False, cell: str = "lstm", hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0, stateful: bool = True, window: int = 16,
                 bptt: int = 32, many_to_many: bool | None = None, loss="mse", optimizer="adam", lr: float = 0.01,
                 batch_size: int = 32, update_every: int = 1, weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0, scale_inputs: str | None = "welford", lr_control="plateau",
                 device: str = "cpu", seed: int | None = None, optimizer_kwargs: dict | None = None):
        self.lags = lags
        self.difference = difference
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        self.stateful, self.window, self.bptt, self.many_to_many = stateful, window, bptt, many_to_many
        self.loss, self.optimizer, self.lr, self.batch_size = loss, optimizer, lr, batch_size
        self.update_every, self.weight_decay, self.grad_clip = update_every, weight_decay, grad_clip
        self.scale_inputs, self.lr_control, self.device, self.seed = scale_inputs, lr_control, device, seed
        self.optimizer_kwargs = optimizer_kwargs
        if not lags or any(int(k) != k or k < 1 for k in lags):
            raise ValueError(f"lags={lags!r}: use a tuple of positive integers, e.g. (1,) or (1, 12)")
        self._reset()

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden_size": 4, "lags": (1, 2)}
        yield {"hidden_size": 4, "stateful": False, "window": 3, "difference": True, "cell": "gru"}

    def _reset(self):
        p = {k: v for k, v in self._get_params().items() if k not in ("lags", "difference")}
        self.regressor_ = LSTMRegressor(**p)
        self.history_: list = []        # the last max(lags) + 1 values of the series
        self.n_seen_ = 0

    # -- features ----------------------------------------------------------------------------

    def _features(self, hist: list, x: dict | None) -> dict:
        f = {}
        if x:
            for k, v in x.items():
                if not isinstance(v, _TIME):
                    f[k] = v
        n, d = len(hist), self.difference
        for k in self.lags:
            if d:
                f[f"dy-{k}"] = hist[n - k] - hist[n - k - 1] if n > k else math.nan
            else:
                f[f"y-{k}"] = hist[n - k] if n >= k else math.nan
        return f

    # -- river API ---------------------------------------------------------------------------

    def learn_one(self, y: float, x: dict | None = None) -> None:
        y = _finite(y)
        if y is None:   # missing, NaN, inf, or an integer beyond the float range
            self.regressor_.n_skipped_ += 1
            return
        hist = self.history_
        target = (y - hist[-1] if hist else None) if self.difference else y
        self.regressor_.learn_one(self._features(hist, x), target)
        hist.append(y)
        del hist[: max(0, len(hist) - max(self.lags) - 1)]
        self.n_seen_ += 1

    def forecast(self, horizon: int, xs: list | None = None) -> list:
        if xs is None:
            xs = [None] * horizon
        if len(xs) != horizon:
            raise ValueError(f"xs has {len(xs)} entries for horizon={horizon}; give one dict per step")
        reg, hist = self.regressor_, list(self.history_)
        if reg.module_ is None:
            return [hist[-1] if hist else 0.0] * horizon
        carry, out = reg._carry(None), []
        for x in xs:
            f = self._features(hist, x)
            for k, v in f.items():
                if not (v is None or isinstance(v, numbers.Real)):
                    raise TypeError(f"forecast: feature {k!r} is a {type(v).__name__}; give numbers")
            o, carry = reg._advance(reg.features_.row(f, grow=False), carry)
            y_hat = float(reg._unscale(o[0]))
            if self.difference:
                y_hat += hist[-1] if hist else 0.0
            out.append(y_hat)
            hist.append(y_hat)
        return out

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"class": type(self).__qualname__, "history": [float(v) for v in self.history_],
                "n_seen": self.n_seen_, "regressor": self.regressor_.state_dict()}

    def load_state_dict(self, s: dict):
        if s.get("class") != type(self).__qualname__:
            raise ValueError(f"state of a {s.get('class')} cannot be loaded into a {type(self).__qualname__}")
        self._reset()
        self.history_, self.n_seen_ = list(s["history"]), s["n_seen"]
        self.regressor_.load_state_dict(s["regressor"])
        return self

