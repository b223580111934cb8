"""`MLPForecaster`: a direct multi-horizon forecaster that learns the change from the last value.

At each origin t the network reads the last `window` values of the series, as changes from the
last value y[t] divided by the window's own scale (the mean absolute step between neighbouring
values), and outputs the scaled change y[t+k] - y[t] for every step k = 1..`horizon` at once:

    forecast[k] = y[t] + scale[t] * (linear(z)[k] + mlp(z)[k]),   z = (window - y[t]) / scale[t]

The output layers start at zero, so an untrained model forecasts the last value; weight decay
pulls it back there, and the model moves away from the naive forecast only as far as the data
carry it. A linear path (which can express seasonal naive, drift, averages) and a small tanh MLP
are summed; `n_members` such networks with their own initial weights train as one batched
network (one forward and one backward for all) and their forecasts are averaged.

Every event completes the targets of the `horizon` most recent origins; `steps` optimizer steps
follow, each on a batch of `batch_size` origins: `recent` of them drawn among those just
completed, the rest from a replay memory of the last `memory` origins (partly known targets are
masked). Series are short, so each event is learned from many times early on.

Fields of x are not used (the series alone is the input); use `LSTMForecaster` for exogenous
features.

>>> import math
>>> model = MLPForecaster(seed=0)
>>> for t in range(240):                      # a season of 12 on a rising trend
...     model.learn_one(100 + t + 10 * math.sin(2 * math.pi * t / 12))
>>> truth = [100 + t + 10 * math.sin(2 * math.pi * t / 12) for t in range(240, 252)]
>>> err = sum(abs(f - y) for f, y in zip(model.forecast(12), truth)) / 12
>>> naive = sum(abs(339 + 10 * math.sin(2 * math.pi * 239 / 12) - y) for y in truth) / 12
>>> err < 0.5 * naive
True
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from river.time_series.base import Forecaster

from . import checkpoint
from .alarm_season import find_period
from .base import _load, _plain_params, _qualified, resolve_device
from .regression import _finite

MAX_ABS = 1e30   # larger values are skipped, as the runtime's range rule ([schema] max_abs) refuses them
AUTO_WINDOW = 18            # `window="auto"` before a season is found (chosen on AirlinePassengers and WaterFlow)
MAX_SEASON_WINDOW = 513     # the widest window a found period may give
SEASON_CHECKS = frozenset((128, 256, 512, 1024))   # values seen when a period is looked for

__all__ = ["MLPForecaster"]


def _cloned(v):
    """A copy sharing no tensor with `v` (an optimizer's state_dict holds its live tensors)."""
    if torch.is_tensor(v):
        return v.detach().cpu().clone()
    if isinstance(v, dict):
        return {k: _cloned(i) for k, i in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_cloned(i) for i in v)
    return v


class _Members(torch.nn.Module):
    """`n` members side by side: z (n, B, W) -> scaled changes (n, B, H)."""

    def __init__(self, n: int, window: int, horizon: int, hidden: int, gen: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(window)

        def uniform(*shape):
            return torch.nn.Parameter((torch.rand(*shape, generator=gen) * 2 - 1) * bound)

        self.lin = torch.nn.Parameter(torch.zeros(n, window, horizon))
        self.bias = torch.nn.Parameter(torch.zeros(n, 1, horizon))
        self.hidden = hidden
        if hidden:
            self.w1, self.b1 = uniform(n, window, hidden), uniform(n, 1, hidden)
            self.w2 = torch.nn.Parameter(torch.zeros(n, hidden, horizon))

    def forward(self, z):                                          # (n, B, W)
        out = torch.baddbmm(self.bias, z, self.lin)                # (n, B, H)
        if self.hidden:
            out = out + torch.bmm(torch.tanh(torch.baddbmm(self.b1, z, self.w1)), self.w2)
        return out


class SavedForecaster:
    """`save` / `load` for forecasters: the class, its parameters and its `state_dict()`."""

    def save(self, path):
        """Write the forecaster atomically; read it back with `streamnn.load(path)`."""
        checkpoint.save_checkpoint({"learner": _qualified(type(self)), "params": _plain_params(self),
                                    "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path, **params):
        """Read a forecaster written by `save`; refuses a file holding another class of learner."""
        return _load(path, params, expect=cls)


class MLPForecaster(SavedForecaster, Forecaster):
    """A streaming forecaster that predicts the change from the last value, for every step at once.

    Parameters
    ----------
    window
        Past values read at each origin (the last value included). "auto" (the default): 18, and
        once, when the series shows a period of `P` >= 18 values (`alarm_season.find_period` on
        the values kept, checked after 128, 256, 512 and 1,024 values) and, over at least two
        periods of origins, forecasting the value one period back beats the last value by 20 %
        (MAE over the horizon), `P + 1`: the
        window then reaches a season back, so the linear path can express seasonal naive (NAB's
        nyc_taxi, half-hourly with a daily period of 48: 3,307 -> see benchmarks/results/forecast.md).
        The network and its optimizer restart at that moment, on the values kept. `window_` is the
        width in use, `season_` the period adopted (0: none).
    horizon
        Steps forecast directly; `forecast(h)` with a longer `h` rolls the forecast forward.
    hidden
        Width of the MLP path (0: the linear path alone).
    n_members
        Networks averaged, trained as one batched network.
    lr, weight_decay
        AdamW's constant learning rate and decoupled weight decay (towards the last-value
        forecast); set here, independent of the library's learning-rate control.
    steps
        Optimizer steps after each event.
    batch_size, recent
        Origins per step; `recent` of them among the `horizon` origins the event just completed.
    scale_power
        Each origin's loss is weighted by (its scale / the batch's mean scale) ** scale_power: 1
        weighs errors in the series' own units (as MAE does), 0 in scaled units.
    memory
        Origins kept for replay (older ones are forgotten, which also follows a drift).
    loss
        "l1" (the median change; robust to anomalies), "huber" or "mse".
    device, seed
        Torch device; seed of the initial weights and of the replay draws.

    Examples
    --------
    >>> model = MLPForecaster(seed=1)
    >>> for t in range(200):
    ...     model.learn_one(10.0 + (t % 4))          # 10, 11, 12, 13, 10, ...
    >>> [round(v) for v in model.forecast(horizon=6)]
    [10, 11, 12, 13, 10, 11]
    """

    _LOSSES = ("l1", "huber", "mse")

    def __init__(self, window: int | str = "auto", horizon: int = 24, hidden: int = 32, n_members: int = 4,
                 lr: float = 0.003, weight_decay: float = 0.0, steps: int = 4, batch_size: int = 32,
                 recent: int = 0, scale_power: float = 0.5, memory: int = 1000, loss: str = "l1",
                 device: str = "cpu", seed: int | None = None):
        self.window, self.horizon, self.hidden, self.n_members = window, horizon, hidden, n_members
        self.lr, self.weight_decay, self.steps, self.batch_size = lr, weight_decay, steps, batch_size
        self.recent, self.scale_power, self.memory = recent, scale_power, memory
        self.loss, self.device, self.seed = loss, device, seed
        if window != "auto" and not (isinstance(window, int) and not isinstance(window, bool) and window >= 2):
            raise ValueError(f"window={window!r}: use 'auto' or an integer of at least 2 (the last value "
                             "and one before it)")
        for name in ("horizon", "n_members", "batch_size", "memory"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: use a positive integer")
        if not 0 <= recent <= batch_size:
            raise ValueError(f"recent={recent}: use 0..batch_size ({batch_size})")
        if loss not in self._LOSSES:
            raise ValueError(f"loss={loss!r}: use one of {self._LOSSES}")
        self._reset()

    @classmethod
    def _unit_test_params(cls):
        yield {"window": 4, "horizon": 3, "hidden": 4, "n_members": 2, "steps": 1}

    @property
    def _is_stochastic(self):
        return True

    def _reset(self):
        self.gen_ = torch.Generator().manual_seed(self.seed if self.seed is not None else
                                                  int(torch.randint(2**62, (1,)).item()))
        self._device = resolve_device(self.device)
        self.window_ = AUTO_WINDOW if self.window == "auto" else int(self.window)
        self.season_ = 0
        self._build()
        self.y_ = np.zeros(2 * self._keep_len())        # the series' last values; y_[: n_kept_]
        self.n_kept_ = 0
        self.n_seen_ = 0
        self.n_skipped_ = 0
        self._warned_x = False

    def _build(self):
        """A fresh network and optimizer of width `window_`."""
        self.module_ = _Members(self.n_members, self.window_, self.horizon, self.hidden, self.gen_).to(self._device)
        self.optimizer_ = torch.optim.AdamW(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _keep_len(self) -> int:
        return self.memory + self.horizon + self.window_

    def _widen(self, window: int):
        """Read `window` values from now on: a fresh network and optimizer, more values kept."""
        self.window_ = int(window)
        self._build()
        if len(self.y_) < 2 * self._keep_len():
            y = np.zeros(2 * self._keep_len())
            y[: self.n_kept_] = self.y_[: self.n_kept_]
            self.y_ = y

    def _maybe_season(self):
        """`window="auto"`: widen the window to reach one period back, once, where a period beyond
        it is found and forecasting the value a period back beats the last value on the values kept."""
        ys = self.y_[: self.n_kept_]
        P = find_period(ys)
        if P < self.window_ or P + 1 > MAX_SEASON_WINDOW:
            return
        H = self.horizon
        T = np.arange(P - 1, len(ys) - H)                              # origins with a season behind them
        if len(T) < 2 * P:                                             # two periods of evidence at least
            return
        k = np.arange(1, H + 1)
        truth = ys[T[:, None] + k]
        seasonal = ys[T[:, None] + (k - 1) % P + 1 - P]                 # the value a whole number of periods back
        if np.abs(seasonal - truth).mean() < 0.8 * np.abs(ys[T][:, None] - truth).mean():
            self.season_ = P
            self._widen(P + 1)

    # -- data --------------------------------------------------------------------------------

    def _windows(self, ys: np.ndarray, ends: np.ndarray):
        """Windows of `ys` ending at `ends` (inclusive), padded with ys[0] before the series'
        start: the scaled changes z (B, W), the last values (B, 1) and the scales (B, 1)."""
        idx = np.maximum(ends[:, None] + np.arange(1 - self.window_, 1)[None, :], 0)
        w = ys[idx]                                                           # (B, W)
        base = w[:, -1:]
        scale = np.abs(np.diff(w, axis=1)).mean(axis=1, keepdims=True)
        scale = np.maximum(scale, np.maximum(1e-3 * np.abs(base), 1e-8))
        return (w - base) / scale, base, scale

    def _keep(self, y: float):
        if self.n_kept_ == len(self.y_):            # forget the oldest, keep memory + horizon + window
            keep = self._keep_len()
            self.y_[:keep] = self.y_[self.n_kept_ - keep:self.n_kept_].copy()
            self.n_kept_ = keep
        self.y_[self.n_kept_] = y
        self.n_kept_ += 1

    # -- river API ---------------------------------------------------------------------------

    def learn_one(self, y: float, x: dict | None = None) -> None:
        y = _finite(y)
        if y is None or abs(y) > MAX_ABS:   # missing, NaN, inf, an integer beyond the float range, or
            self.n_skipped_ += 1            # beyond the runtime's range rule (its windows' differences
            return                          # and scales would overflow)
        self._warn_x(x)
        self._keep(y)
        self.n_seen_ += 1
        if self.window == "auto" and not self.season_ and self.n_seen_ in SEASON_CHECKS:
            self._maybe_season()
        if self.n_kept_ >= 2:
            for _ in range(self.steps):
                self._step()

    def _step(self):
        # 1. origins: `recent` among those this event completed, the rest from the memory
        n, H = self.n_kept_, self.horizon
        first = max(0, n - 1 - self.memory)        # once values are forgotten, windows are full
        draw = torch.randint(first, n - 1, (self.batch_size,), generator=self.gen_).numpy()
        if self.recent:
            back = torch.randint(1, H + 1, (self.recent,), generator=self.gen_).numpy()
            draw[: self.recent] = np.maximum(n - 1 - back, first)
        # 2. inputs and the known part of the targets
        z, base, scale = self._windows(self.y_, draw)
        at = draw[:, None] + np.arange(1, H + 1)[None, :]                     # (B, H)
        known = at <= n - 1
        target = np.where(known, (self.y_[np.minimum(at, n - 1)] - base) / scale, 0.0)
        np.clip(target, -1e30, 1e30, out=target)   # (values within MAX_ABS: no inf in float32)
        weight = known * (scale / scale.mean()) ** self.scale_power                 # (B, H)
        if self._device.type == "cpu":
            self._numpy_step(z, target, weight)
        else:
            self._torch_step(z, target, weight)

    def _errors_grad(self, e: np.ndarray) -> np.ndarray:
        if self.loss == "l1":
            return np.sign(e)
        return np.clip(e, -1.0, 1.0) if self.loss == "huber" else 2.0 * e

    def _numpy_step(self, z, target, weight):
        """The forward, backward and AdamW update in numpy, in place on the torch parameters and
        the torch optimizer's state (a small network: torch's per-op overhead would dominate)."""
        m, f32 = self.module_, np.float32
        P = {k: v.detach().numpy() for k, v in m.named_parameters()}
        zb = np.broadcast_to(z.astype(f32), (self.n_members,) + z.shape)              # (n, B, W)
        out = zb @ P["lin"] + P["bias"]
        if m.hidden:
            h = np.tanh(zb @ P["w1"] + P["b1"])                                       # (n, B, hid)
            out += h @ P["w2"]
        g = self._errors_grad(out - target.astype(f32)) * (weight / (weight.sum() * self.n_members)).astype(f32)
        zt = zb.transpose(0, 2, 1)
        G = {"lin": zt @ g, "bias": g.sum(1, keepdims=True)}
        if m.hidden:
            G["w2"] = h.transpose(0, 2, 1) @ g
            ga = (g @ P["w2"].transpose(0, 2, 1)) * (1 - h * h)
            G["w1"], G["b1"] = zt @ ga, ga.sum(1, keepdims=True)
        group = self.optimizer_.param_groups[0]
        lr, wd, eps, (b1, b2) = group["lr"], group["weight_decay"], group["eps"], group["betas"]
        for name, param in m.named_parameters():
            st = self.optimizer_.state[param]
            if not st:
                st.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(param),
                          exp_avg_sq=torch.zeros_like(param))
            st["step"] += 1
            t = float(st["step"])
            p, mom, sq, grad = P[name], st["exp_avg"].numpy(), st["exp_avg_sq"].numpy(), G[name]
            p *= 1 - lr * wd
            mom *= b1
            mom += (1 - b1) * grad
            sq *= b2
            sq += (1 - b2) * grad * grad
            denom = np.sqrt(sq) / math.sqrt(1 - b2 ** t) + eps
            p -= (lr / (1 - b1 ** t)) * mom / denom

    def _torch_step(self, z, target, weight):
        dev, f32 = self._device, torch.float32
        z = torch.as_tensor(z, dtype=f32, device=dev).expand(self.n_members, -1, -1)
        target = torch.as_tensor(target, dtype=f32, device=dev)
        weight = torch.as_tensor(weight, dtype=f32, device=dev)
        out = self.module_(z)                                                # (n, B, H)
        if self.loss == "l1":
            err = (out - target).abs()
        elif self.loss == "huber":
            err = torch.nn.functional.huber_loss(out, target.expand_as(out), reduction="none")
        else:
            err = (out - target) ** 2
        loss = (err * weight).sum() / (weight.sum() * self.n_members)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()

    def forecast(self, horizon: int, xs: list | None = None) -> list:
        if xs is not None and len(xs) != horizon:
            raise ValueError(f"xs has {len(xs)} entries for horizon={horizon}; give one dict per step or None")
        if self.n_kept_ == 0:
            return [0.0] * horizon
        ys, out = self.y_[: self.n_kept_], []
        with torch.inference_mode():
            while len(out) < horizon:                    # beyond `self.horizon`: roll forward
                z, base, scale = self._windows(ys, np.array([len(ys) - 1]))
                z = torch.as_tensor(z, dtype=torch.float32, device=self._device)
                change = self.module_(z.expand(self.n_members, -1, -1)).mean(0)[0].cpu().numpy()
                block = base[0, 0] + scale[0, 0] * change.astype(np.float64)
                out += [float(v) for v in block]
                ys = np.concatenate([ys, block])
        return out[:horizon]

    def _warn_x(self, x):
        if x and not self._warned_x and any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            for v in x.values()):
            self._warned_x = True
            warnings.warn("MLPForecaster uses the series alone; the numeric fields of x "
                          f"({sorted(x)[:4]}) are ignored. Use LSTMForecaster for exogenous features.",
                          stacklevel=3)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"class": type(self).__qualname__, "y": torch.tensor(self.y_[: self.n_kept_]),
                "n_seen": self.n_seen_, "n_skipped": self.n_skipped_,
                "module": {k: v.detach().cpu().clone() for k, v in self.module_.state_dict().items()},
                "optimizer": _cloned(self.optimizer_.state_dict()), "generator": self.gen_.get_state(),
                "window": self.window_, "season": self.season_}

    def load_state_dict(self, s: dict):
        if s.get("class") != type(self).__qualname__:
            raise ValueError(f"state of a {s.get('class')} cannot be loaded into a {type(self).__qualname__}")
        self._reset()
        if int(s.get("window", self.window_)) != self.window_:   # widened to reach a season (states before: 18)
            self._widen(int(s["window"]))
        self.season_ = int(s.get("season", 0))
        y = s["y"].numpy().astype(np.float64)
        if len(y) > len(self.y_):
            raise ValueError(f"the state keeps {len(y)} values, more than memory={self.memory} allows")
        self.y_[: len(y)], self.n_kept_ = y, len(y)
        self.n_seen_, self.n_skipped_ = int(s["n_seen"]), int(s["n_skipped"])
        self.module_.load_state_dict(s["module"])
        self.optimizer_.load_state_dict(s["optimizer"])
        self.gen_.set_state(s["generator"])
        return self

