"""Learning-rate control on the live (prequential) loss, with a drift-aware re-warm.

`StreamLR` (`lr_control="stream"`, opt-in; see benchmarks/results/core_lr.md) is plateau control built for a
stream: the loss is an exponential moving average with a time constant in *events*, patience is
counted in events, the rate never falls below a fraction of the initial one (`min_lr_ratio`), and
it climbs back (divided by `factor`, up to the initial rate) when the smoothed loss rises above its
best by `recover`. A Page-Hinkley test on the raw loss returns it to the initial rate on a drift.

`PlateauLR` (`lr_control="plateau"`) follows `torch.optim.lr_scheduler.ReduceLROnPlateau` (mode "min", relative
threshold, `factor`, `patience`, `cooldown`, `min_lr`), but it is fed the *prequential* loss of
each mini-batch (measured before the update on it), smoothed by an exponential moving average,
and it counts updates, not epochs. A plateau scheduler can only go down, while a stream can
drift; so a Page-Hinkley test watches the raw loss for a lasting rise, and on a drift the rate
returns to its initial value and the plateau memory is reset (`rewarm=True`).

>>> import torch
>>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
>>> ctl = PlateauLR(factor=0.5, patience=2, smoothing=1.0, drift_delta=0.05, drift_threshold=5.0)
>>> ctl.attach(opt)
>>> for loss in [1.0, 1.0, 1.0, 1.0]:
...     _ = ctl.step(loss)
>>> round(opt.param_groups[0]["lr"], 4)
0.05
>>> ctl.detector.min_samples = 4
>>> steps = 0
>>> while ctl.n_rewarms == 0 and steps < 50:   # the loss jumps and stays up: a drift
...     _ = ctl.step(5.0); steps += 1
>>> ctl.n_rewarms, round(opt.param_groups[0]["lr"], 4)
(1, 0.1)
"""

from __future__ import annotations

import copy
import math

__all__ = ["StreamLR", "PlateauLR", "PageHinkley", "make_control", "check_control"]


class PageHinkley:
    """Page-Hinkley test for an increase of the mean, in units of the running mean.

    Flags a drift when the cumulative excess of `x` over its running mean (minus a tolerance of
    `delta` times the mean per step) exceeds `threshold` times the mean.
    """

    def __init__(self, delta: float = 0.05, threshold: float = 5.0, min_samples: int = 20):
        self.delta, self.threshold, self.min_samples = delta, threshold, min_samples
        self.reset()

    def reset(self):
        self.n, self.mean, self.cum, self.cum_min = 0, 0.0, 0.0, 0.0

    def update(self, x: float) -> bool:
        self.n += 1
        self.mean += (x - self.mean) / self.n
        scale = abs(self.mean) + 1e-12
        self.cum += x - self.mean - self.delta * scale
        self.cum_min = min(self.cum_min, self.cum)
        if self.n >= self.min_samples and self.cum - self.cum_min > self.threshold * scale:
            self.reset()
            return True
        return False

    def state_dict(self) -> dict:
        return dict(n=self.n, mean=self.mean, cum=self.cum, cum_min=self.cum_min)

    def load_state_dict(self, s: dict):
        self.n, self.mean, self.cum, self.cum_min = s["n"], s["mean"], s["cum"], s["cum_min"]


class PlateauLR:
    """Lower the learning rate when the smoothed prequential loss stops improving.

    Parameters
    ----------
    factor
        The rate is multiplied by this on a plateau.
    patience
        Updates without improvement tolerated before lowering the rate.
    threshold
        Relative improvement that counts (ReduceLROnPlateau's "rel" mode).
    cooldown
        Updates to wait after a reduction before counting again.
    min_lr
        Floor of the rate.
    smoothing
        Weight of a new loss in the exponential moving average (1.0 = no smoothing).
    rewarm
        Return to the initial rate when a Page-Hinkley test sees the loss rise (a drift).
    drift_delta, drift_threshold
        The Page-Hinkley test's tolerance and alarm level, in units of the running mean loss. The
        defaults (0.25, 50) were chosen on a 60k-event Agrawal stream with one abrupt drift: no
        false alarm in 30k stationary events (per-batch losses are noisy; (0.05, 5) fired 176
        times there) and one alarm after the drift.
    min_lr_ratio
        A second floor, relative to the initial rate: the rate never falls below
        `min_lr_ratio * initial` (None = only `min_lr`, ReduceLROnPlateau's semantics).
        `lr_control="plateau_floor"` (the default of `MLPClassifier`) is `PlateauLR(min_lr_ratio=0.1)`:
        without it the rate reaches 1e-5 within ~1,000 events and the model stops following a
        drift (benchmarks/results/drift.md).
    """

    def __init__(self, factor: float = 0.5, patience: int = 100, threshold: float = 1e-3,
                 cooldown: int = 0, min_lr: float = 1e-5, smoothing: float = 0.05,
                 rewarm: bool = True, drift_delta: float = 0.25, drift_threshold: float = 50.0,
                 max_history: int = 10_000, min_lr_ratio: float | None = None):
        if not 0 < factor < 1:
            raise ValueError(f"factor={factor}: must be in (0, 1)")
        if min_lr_ratio is not None and not 0 < min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={min_lr_ratio}: must be in (0, 1] or None")
        self.min_lr_ratio = min_lr_ratio
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.cooldown, self.min_lr, self.smoothing = cooldown, min_lr, smoothing
        self.rewarm, self.max_history = rewarm, max_history
        self.detector = PageHinkley(drift_delta, drift_threshold)
        self.optimizer = None
        self.initial_lrs: list[float] = []
        self.n_updates = self.n_reductions = self.n_rewarms = 0
        self.smoothed = None
        self.best = math.inf
        self.num_bad = self.cooldown_counter = 0
        self.history: list[tuple[int, float]] = []   # (update, lr) at each change

    def attach(self, optimizer):
        self.optimizer = optimizer
        if not self.initial_lrs:
            self.initial_lrs = [g["lr"] for g in optimizer.param_groups]
            self.history.append((0, self.initial_lrs[0]))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _set(self, lrs):
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self.history.append((self.n_updates, lrs[0]))
        if len(self.history) > self.max_history:
            del self.history[1 : len(self.history) - self.max_history + 1]

    def params(self) -> dict:
        """The constructor arguments (for a plain-type checkpoint)."""
        return {k: getattr(self, k) for k in ("factor", "patience", "threshold", "cooldown", "min_lr",
                                              "smoothing", "rewarm", "min_lr_ratio")}

    def step(self, loss: float, n: int = 1) -> bool:
        """Feed the prequential loss of one update (`n`, the events it covers, is not used: this
        controller counts updates); a non-finite loss is ignored. Returns True on a drift re-warm."""
        if not math.isfinite(loss):
            return False
        self.n_updates += 1
        s = self.smoothed = loss if self.smoothed is None else self.smoothed + self.smoothing * (loss - self.smoothed)
        if self.rewarm and self.detector.update(loss):
            self.n_rewarms += 1
            self.best, self.num_bad, self.cooldown_counter = math.inf, 0, 0
            self.smoothed = loss
            if [g["lr"] for g in self.optimizer.param_groups] != self.initial_lrs:
                self._set(self.initial_lrs)
            return True
        if s < self.best * (1.0 - self.threshold):
            self.best, self.num_bad = s, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            r = self.min_lr_ratio or 0.0
            lrs = [max(g["lr"] * self.factor, self.min_lr, r * lr0)
                   for g, lr0 in zip(self.optimizer.param_groups, self.initial_lrs)]
            if lrs != [g["lr"] for g in self.optimizer.param_groups]:
                self.n_reductions += 1
                self._set(lrs)
            self.cooldown_counter, self.num_bad = self.cooldown, 0
        return False

    def state_dict(self) -> dict:
        return dict(initial_lrs=list(self.initial_lrs), n_updates=self.n_updates,
                    n_reductions=self.n_reductions, n_rewarms=self.n_rewarms,
                    smoothed=self.smoothed, best=self.best, num_bad=self.num_bad,
                    cooldown_counter=self.cooldown_counter,
                    history=[list(h) for h in self.history], detector=self.detector.state_dict())

    def load_state_dict(self, s: dict):
        self.initial_lrs = list(s["initial_lrs"])
        for k in ("n_updates", "n_reductions", "n_rewarms", "smoothed", "best", "num_bad", "cooldown_counter"):
            setattr(self, k, s[k])
        self.history = [tuple(h) for h in s["history"]]
        self.detector.load_state_dict(s["detector"])


class StreamLR:
    """Plateau control for a long stream: it lowers the rate on a lasting plateau of the smoothed
    loss, raises it again when the loss rises, and never starves the model.

    1. The prequential loss of each update (measured before the update, over its `n` new events)
       enters an exponential moving average whose time constant is `window` events.
    2. When that average has not improved on its best by a relative `threshold` for `patience`
       events, the rate is multiplied by `factor`, but never below `min_lr_ratio` times the
       initial rate.
    3. When the average rises above its best by a relative `recover`, the rate is divided by
       `factor` (up to the initial rate) and the best is reset to the current average.
    4. A Page-Hinkley test on the raw loss (`rewarm=True`) sees a lasting rise (a drift): the rate
       returns to its initial value, the memory is reset, and `step` returns True so that the
       learner can forget its replay memory and train after every event again for a while.

    Parameters
    ----------
    factor
        The rate is multiplied by this on a plateau (and divided by it on a recovery).
    patience
        Events without improvement tolerated before lowering the rate.
    threshold
        Relative improvement of the smoothed loss that counts as progress.
    min_lr_ratio
        Floor of the rate, as a fraction of the initial rate.
    window
        Time constant of the loss average, in events.
    recover
        Relative rise of the smoothed loss over its best that raises the rate (None = never).
    rewarm, drift_delta, drift_threshold
        As in `PlateauLR`.

    It is opt-in: against the plateau default it was better on Bananas, ImageSegments and
    TrumpApproval but worse on Phishing (a short stream where descending fast helps);
    benchmarks/results/core_lr.md has the figures.

    Examples
    --------
    >>> import torch
    >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01)
    >>> ctl = StreamLR(patience=100, window=10, rewarm=False)
    >>> ctl.attach(opt)
    >>> for _ in range(1000):               # a flat loss, 16 events per update
    ...     _ = ctl.step(0.5, n=16)
    >>> opt.param_groups[0]["lr"]           # lowered, but not below 0.01 * min_lr_ratio
    0.001
    >>> for _ in range(3):                  # the loss rises: the rate climbs back
    ...     _ = ctl.step(1.0, n=16)
    >>> opt.param_groups[0]["lr"] > 0.001
    True
    """

    def __init__(self, factor: float = 0.5, patience: int = 100, threshold: float = 0.01,
                 min_lr_ratio: float = 0.1, window: int = 50, recover: float | None = 0.1,
                 rewarm: bool = True, drift_delta: float = 0.25, drift_threshold: float = 50.0,
                 max_history: int = 10_000):
        if not 0 < factor < 1:
            raise ValueError(f"factor={factor}: must be in (0, 1)")
        if not 0 < min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={min_lr_ratio}: must be in (0, 1]")
        if patience < 1 or window < 1:
            raise ValueError(f"patience={patience}, window={window}: both must be >= 1 event")
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.min_lr_ratio, self.window, self.recover = min_lr_ratio, window, recover
        self.rewarm, self.drift_delta, self.drift_threshold = rewarm, drift_delta, drift_threshold
        self.max_history = max_history
        self.detector = PageHinkley(drift_delta, drift_threshold)
        self.optimizer = None
        self.initial_lrs: list[float] = []
        self.n_updates = self.n_events = self.n_reductions = self.n_recoveries = self.n_rewarms = 0
        self.smoothed = None
        self.best = math.inf
        self.since_best = 0        # events since the smoothed loss last improved (or the rate changed)
        self.history: list[tuple[int, float]] = []   # (update, lr) at each change

    def params(self) -> dict:
        """The constructor arguments (for a plain-type checkpoint)."""
        return {k: getattr(self, k) for k in ("factor", "patience", "threshold", "min_lr_ratio", "window",
                                              "recover", "rewarm", "drift_delta", "drift_threshold")}

    attach = PlateauLR.attach
    lr = PlateauLR.lr
    _set = PlateauLR._set

    def _scale(self, ratio: float):
        """Multiply every group's rate by `ratio`, clipped to [min_lr_ratio, 1] times its initial rate."""
        cur = [g["lr"] for g in self.optimizer.param_groups]
        new = [min(max(lr * ratio, lr0 * self.min_lr_ratio), lr0) for lr, lr0 in zip(cur, self.initial_lrs)]
        if new != cur:
            self._set(new)
            return True
        return False

    def step(self, loss: float, n: int = 1) -> bool:
        """Feed the prequential loss of one update over `n` new events; a non-finite loss is
        ignored. Returns True when a drift re-warm happened."""
        if not math.isfinite(loss):
            return False
        self.n_updates += 1
        self.n_events += n
        if self.rewarm and self.detector.update(loss):
            self.n_rewarms += 1
            self.smoothed, self.best, self.since_best = loss, math.inf, 0
            if [g["lr"] for g in self.optimizer.param_groups] != self.initial_lrs:
                self._set(list(self.initial_lrs))
            return True
        a = 1.0 - math.exp(-n / self.window)
        s = self.smoothed = loss if self.smoothed is None else self.smoothed + a * (loss - self.smoothed)
        self.since_best += n
        if s < self.best * (1.0 - self.threshold):
            self.best, self.since_best = s, 0
        elif self.recover is not None and s > self.best * (1.0 + self.recover):
            if self._scale(1.0 / self.factor):
                self.n_recoveries += 1
            self.best, self.since_best = s, 0
        elif self.since_best >= self.patience:
            if self._scale(self.factor):
                self.n_reductions += 1
            self.since_best = 0
        return False

    def state_dict(self) -> dict:
        return dict(initial_lrs=list(self.initial_lrs), n_updates=self.n_updates, n_events=self.n_events,
                    n_reductions=self.n_reductions, n_recoveries=self.n_recoveries,
                    n_rewarms=self.n_rewarms, smoothed=self.smoothed, best=self.best,
                    since_best=self.since_best, history=[list(h) for h in self.history],
                    detector=self.detector.state_dict())

    def load_state_dict(self, s: dict):
        self.initial_lrs = list(s["initial_lrs"])
        for k in ("n_updates", "n_events", "n_reductions", "n_recoveries", "n_rewarms", "smoothed", "best",
                  "since_best"):
            setattr(self, k, s[k])
        self.history = [tuple(h) for h in s["history"]]
        self.detector.load_state_dict(s["detector"])


CONTROLS = {"stream": StreamLR, "plateau": PlateauLR,
            "plateau_floor": lambda: PlateauLR(min_lr_ratio=0.1)}


def make_control(spec):
    """`lr_control` -> a fresh controller (or None): "stream", "plateau", None, or an instance
    (copied, so that clones never share one)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return CONTROLS[spec]()
    return copy.deepcopy(spec)


def check_control(spec):
    if not (spec is None or (isinstance(spec, str) and spec in CONTROLS)
            or isinstance(spec, (StreamLR, PlateauLR))):
        raise ValueError(f"lr_control={spec!r}: use 'plateau' (ReduceLROnPlateau-style), 'plateau_floor' "
                         "(the same with a floor at lr/10), 'stream', None (constant), or a "
                         "StreamLR(...)/PlateauLR(...)")
