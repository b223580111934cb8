"""`TorchLearner`: the machinery shared by every streamnn learner.

The constructor only stores its arguments (river's `clone()` and `_get_params()` rely on it);
torch objects are built lazily from the first sample, once the input width is known. Learned
state ends in `_` (`module_`, `optimizer_`, `scaler_`, ...).

The data path of one sample:

1. `features_` maps names to fixed columns; the row is raw floats, NaN where missing.
2. Prediction scales the row with `scaler_` (statistics of *past* training samples only) and runs
   the network in eval mode (a numpy copy of the forward for plain MLPs on the CPU: a batch-1
   prediction in microseconds, with no torch overhead).
3. `learn_one` appends the raw row to a ring buffer. Every `update_every` samples one optimizer
   step is taken on the last `batch_size` samples (plus `replay` samples from a reservoir):
   first the scaler absorbs the new rows, then the batch is scaled, the loss of the new rows is
   recorded *before* the step (the prequential loss that drives `lr_control`), and the step is
   taken unless the loss is not finite.

`learn_many` runs exactly the same schedule as a loop of `learn_one`, so the model state never
depends on how a stream was cut into batches (which makes crash recovery exact); it only writes the
rows between two steps to the buffer at once instead of one by one.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import nn

from .buffering import Reservoir, RingBuffer
from .engine import BackendChoice
from .features import FeatureRegistry
from .lr import check_control, make_control
from .modules import first_linear, grow_input
from .normalization import RunningStats
from .schedule import FrameSchedule, check_weight
from .serialization import (_from_plain, _load, _plain_params, _qualified, _to_cpu,  # noqa: F401 (their old home)
                            _to_plain, load, save)

__all__ = ["TorchLearner", "OPTIMIZERS", "load"]

OPTIMIZERS = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchLearner(BackendChoice, FrameSchedule, abc.ABC):
    """Mixin with the lazy build, buffering, training step, prediction path and state.

    The hooks a learner gives (the contract a new learner is written against):

    - required (abstract): `_make_module(n_in, n_out)` -> nn.Module, `_n_outputs()` -> int,
      `_prepare_targets(Y)` -> the buffered targets as the network's targets (numpy);
    - the loss: `_loss_per_sample(out, T)` -> (B,) torch losses, or `_train_forward(Z, T)` for a
      learner whose forward is not `module(Z)` (the autoencoder); `_fast_loss()` -> the same loss
      for the numpy backend ("ce", "mse" or a `streamnn.backends.losses` op), None: torch only;
    - optional: `_absorb_targets(Y)` (target scalers), `_extra_state()` / `_load_extra_state(s)`,
      `_select_backend()` (a learner's own reason to use torch), `_invalidate()` (extended by a
      learner with caches of its own).

    Predictions go through `_forward(Z)`; every backend's step ends in `_record_step`.
    """

    _TARGET_NAN_SKIPS = True
    _SHIFT_AFTER = None   # the scalers' `RunningStats(shift_after=...)`; supervised learners: 16

    def _init_common(self, optimizer, lr, batch_size, update_every, replay, loss, weight_decay,
                     grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs, warmup=0):
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.update_every = update_every
        self.warmup = warmup
        self.replay = replay
        self.loss = loss
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.scale_inputs = scale_inputs
        self.lr_control = lr_control
        self.device = device
        self.seed = seed
        self.optimizer_kwargs = optimizer_kwargs
        if batch_size < 1 or update_every < 1:
            raise ValueError("batch_size and update_every must be >= 1")
        if scale_inputs not in (None, "welford", "ewm"):
            raise ValueError(f"scale_inputs={scale_inputs!r}: use 'welford', 'ewm' or None")
        check_control(lr_control)
        if isinstance(optimizer, str) and optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}: use one of {sorted(OPTIMIZERS)} or a torch.optim class")
        self._reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def _reset(self):
        self.module_ = None
        self.optimizer_ = None
        self.lr_control_ = None
        self.features_ = FeatureRegistry()
        self.scaler_ = RunningStats(mode=self.scale_inputs or "welford", shift_after=self._SHIFT_AFTER)
        cap = max(self.batch_size, self.update_every)
        self.buffer_ = RingBuffer(cap)
        self.reservoir_ = Reservoir(max(1, 8 * self.batch_size), seed=self.seed) if self.replay else None
        self.n_seen_ = 0           # samples learned
        self.n_updates_ = 0        # optimizer steps taken
        self.n_skipped_ = 0        # samples refused (non-finite target)
        self.n_nonfinite_ = 0      # steps skipped because the loss was not finite
        self.last_loss_ = math.nan  # prequential loss of the last update
        self._pending = 0          # samples buffered since the last step
        self._warm_until = 0       # after a drift re-warm: step after every sample up to this count
        self._invalidate()
        self._rng_state = None
        self._stochastic = True

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def lr_(self) -> float:
        """The current learning rate (the initial one before the first sample)."""
        return self.optimizer_.param_groups[0]["lr"] if self.optimizer_ is not None else self.lr

    @property
    def lr_history_(self) -> list:
        """(update index, learning rate) at every change, for plots."""
        return list(self.lr_control_.history) if self.lr_control_ is not None else []

    def _make_optimizer(self, params):
        opt = self.optimizer
        cls = OPTIMIZERS[opt.lower()] if isinstance(opt, str) else opt
        kwargs = dict(self.optimizer_kwargs or {})
        kwargs.setdefault("lr", self.lr)
        if cls in (torch.optim.Adam, torch.optim.AdamW) and "foreach" not in kwargs:
            kwargs.setdefault("fused", True)   # one kernel for all parameters: the fastest step
        if self.weight_decay:
            kwargs.setdefault("weight_decay", self.weight_decay)
        return cls(params, **kwargs)

    def _build(self, n_in: int):
        n_out = self._n_outputs()
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            module = self._make_module(n_in, n_out)
            self._rng_state = torch.get_rng_state()
        self.module_ = module.to(self._device)
        self._stochastic = any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()) or (
            not type(module).__module__.startswith("streamnn."))
        self.optimizer_ = self._make_optimizer(self.module_.parameters())
        self.lr_control_ = make_control(self.lr_control)
        if self.lr_control_ is not None:
            self.lr_control_.attach(self.optimizer_)
        self.n_in_ = self._n_in_built = n_in   # widths inside may be sized from the first width
        self._invalidate()

    def _grow_inputs(self, n_in: int):
        lin, _ = first_linear(self.module_, self.n_in_)
        grow_input(lin, n_in, self.optimizer_)
        self.n_in_ = n_in
        self._invalidate()

    def _invalidate(self):
        """The one invalidation point: drop everything derived from the module's parameter objects
        (the chosen backend, the numpy prediction ops); call it after a build, a growth of the
        network or a load. Subclasses with caches of their own extend it."""
        self._plan = self._kernel = self._torch = None
        self._why = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_plan"] = state["_kernel"] = state["_torch"] = None   # numpy views must not be copied apart from tensors
        return state

    # -- rows --------------------------------------------------------------------------------

    def _row(self, x: dict, grow: bool) -> np.ndarray:
        return self.features_.row(x, grow=grow)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        """Raw rows (..., F) -> scaled float32 rows of the network's width."""
        if self.scale_inputs is None:
            Z = np.where(np.isnan(X), 0.0, X)
        else:
            Z = self.scaler_.transform(X)
        n_in = self.n_in_
        if Z.shape[-1] != n_in:   # fewer columns than the network (e.g. a batch from the buffer)
            pad = np.zeros(Z.shape[:-1] + (n_in - Z.shape[-1],))
            Z = np.concatenate([Z, pad], axis=-1)
        return Z.astype(np.float32, copy=False)

    # -- learning ----------------------------------------------------------------------------

    def _ready_for(self, row: np.ndarray) -> bool:
        """Build the network for `row`'s width, or grow its inputs to it; False for an empty first
        row (nothing to build on yet)."""
        if self.module_ is None:
            if len(row) == 0:
                return False
            self._build(len(row))
        elif len(row) > self.n_in_:
            self._grow_inputs(len(row))
        return True

    def _learn_row(self, row: np.ndarray, target, w: float = 1.0):
        if w != 1.0:                   # 1.0 is valid: the check is skipped on the usual path
            check_weight(w)
        if (self.module_ is None or len(row) > self.n_in_) and not self._ready_for(row):
            self._learn_unbuilt(target)
            return
        self.buffer_.append(row, target, w)
        self.n_seen_ += 1
        self._pending += 1
        if self._pending >= (self.update_every if self.n_seen_ > self._warm_limit() else 1):
            self._step()

    # After a drift re-warm (the lr control saw the loss rise for good), the learner steps after every
    # sample again for this many samples and empties its replay reservoir (the old concept); 0 = off.
    # MLPClassifier and MLPRegressor set it (benchmarks/results/drift.md).
    DRIFT_WARMUP = 0

    def _warm_limit(self) -> int:
        return max(self.warmup, getattr(self, "_warm_until", 0))

    def _after_drift(self):
        if not self.DRIFT_WARMUP:
            return
        self._warm_until = self.n_seen_ + self.DRIFT_WARMUP
        if self.reservoir_ is not None:
            self.reservoir_.size = self.reservoir_.total = 0

    def flush(self):
        """Take a step on the samples buffered since the last one (the partial last batch)."""
        if self._pending > 0 and self.module_ is not None:
            self._step()

    def _batch(self):
        """Gather the step's batch: (X, Y, W) raw, and p, the number of new rows at its end."""
        p = self._pending
        res = self.reservoir_
        mix = res is not None and res.size > 0   # the batch is a new array: read the buffer in place
        X, Y, W = self.buffer_.last(max(self.batch_size, p), copy=not mix)
        Xn, Yn, Wn = X[-p:], Y[-p:], W[-p:]
        if self.scale_inputs is not None:
            self.scaler_.update(Xn)
        self._absorb_targets(Yn)
        if res is not None:
            if mix:
                Xr, Yr, Wr = res.sample(max(1, int(self.replay * len(X))))
                F = max(X.shape[1], Xr.shape[1])
                X = np.concatenate([_pad_cols(Xr, F), _pad_cols(X, F)])
                Y = np.concatenate([_pad_cols(Yr, Y.shape[1]) if Y.ndim == 2 else Yr, Y])
                W = np.concatenate([Wr, W])
            res.offer(Xn, Yn, Wn)
        return X, Y, W, p

    def _absorb_targets(self, Y: np.ndarray):
        """Hook: regressors update their target scaler with the new targets here."""

    def _learn_unbuilt(self, target):
        """Hook: the target of a featureless row before the network exists (regressors' prior)."""

    def _train_forward(self, Z, T):
        """Forward and per-sample loss in training mode, with the learner's own RNG stream."""
        module = self.module_
        if not module.training:
            module.train()
        if not self._stochastic:
            return self._loss_per_sample(module(Z), T)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            per = self._loss_per_sample(module(Z), T)
            self._rng_state = torch.get_rng_state()
        return per

    def _fast_loss(self):
        """Hook: the numpy loss ("ce", "mse" or a `streamnn.backends.losses` op) of this learner,
        or None where its loss has no numpy form (the torch backend then trains it)."""
        return None

    def _step(self):
        """1. gather the batch; 2. one step on the backend; 3. the bookkeeping (`_record_step`)."""
        X, Y, W, p = self._batch()
        self._pending = 0
        kernel = self._kernel
        if kernel is None:
            kernel = self._kernel = self._make_kernel() or False
        if kernel:
            res = self.reservoir_
            unit = (self.buffer_.unit and (res is None or res.unit)) or bool((W == 1.0).all())
            per = kernel.step(self._scale(X), self._prepare_targets(Y), None if unit else W)
            tail = per[-p:]
            preq = float(np.add.reduce(tail)) / p if tail.dtype == np.float64 else float(tail.mean())
            self._record_step(preq, kernel.finite, p)
            return
        preq, stepped = self._torch_backend().step(self._scale(X), self._prepare_targets(Y), W, p,
                                                   self._train_forward)
        self._record_step(preq, stepped, p)

    def _apply_loss(self, loss, preq_t, n: int = 1) -> bool:
        """A torch step on `loss` (a learner that computes its own loss, e.g. the sequence
        learners), then the bookkeeping; returns whether a step was taken."""
        preq, stepped = self._torch_backend().apply(loss, preq_t)
        return self._record_step(preq, stepped, n)

    def _record_step(self, preq: float, stepped: bool, n: int = 1) -> bool:
        """The one bookkeeping after a step of any backend: record the prequential loss `preq`
        (of `n` new samples), count the step (or the skipped, non-finite one), feed the lr
        control (and re-warm after a drift). Returns `stepped`."""
        self.last_loss_ = preq
        if not stepped:
            self.n_nonfinite_ += 1
            return False
        self.n_updates_ += 1
        if self.lr_control_ is not None and self.lr_control_.step(preq, n):
            self._after_drift()
        return True

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything learned, as plain types and tensors (no pickled objects)."""
        s = {
            "class": type(self).__qualname__,
            "built": self.module_ is not None,
            "features": self.features_.state_dict(),
            "scaler": self.scaler_.state_dict(),
            "buffer": self.buffer_.state_dict(),
            "counters": dict(n_seen=self.n_seen_, n_updates=self.n_updates_, n_skipped=self.n_skipped_,
                             n_nonfinite=self.n_nonfinite_, pending=self._pending,
                             warm_until=self._warm_until,
                             last_loss=self.last_loss_),
            "extra": self._extra_state(),
        }
        if self.reservoir_ is not None:
            s["reservoir"] = self.reservoir_.state_dict()
        if self.module_ is not None:
            s.update(n_in=self.n_in_, n_in_built=self._n_in_built, module=_to_cpu(dict(self.module_.state_dict())),
                     optimizer=_to_cpu(self.optimizer_.state_dict()), rng=self._rng_state.clone())
            if self.lr_control_ is not None:
                s["lr_control"] = self.lr_control_.state_dict()
        return s

    def load_state_dict(self, s: dict):
        """Restore a state from `state_dict()`; the learner must have the same parameters."""
        if s.get("class") != type(self).__qualname__:
            raise ValueError(f"state of a {s.get('class')} cannot be loaded into a {type(self).__qualname__}")
        self._reset()
        self.features_.load_state_dict(s["features"])
        self.scaler_.load_state_dict(s["scaler"])
        self.buffer_.load_state_dict(s["buffer"])
        if self.reservoir_ is not None and "reservoir" in s:
            self.reservoir_.load_state_dict(s["reservoir"])
        c = s["counters"]
        self.n_seen_, self.n_updates_, self.n_skipped_ = c["n_seen"], c["n_updates"], c["n_skipped"]
        self.n_nonfinite_, self._pending, self.last_loss_ = c["n_nonfinite"], c["pending"], c["last_loss"]
        self._warm_until = c.get("warm_until", 0)
        self._load_extra_state(s["extra"])
        if s["built"]:   # as it was built, then grown: the widths sized from the first width match
            self._build(s.get("n_in_built", s["n_in"]))
            if s["n_in"] > self.n_in_:
                self._grow_inputs(s["n_in"])
            self.module_.load_state_dict(s["module"])
            self.optimizer_.load_state_dict(s["optimizer"])
            self._rng_state = s["rng"].clone()
            if self.lr_control_ is not None and "lr_control" in s:
                self.lr_control_.load_state_dict(s["lr_control"])
        return self

    # -- hooks -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _make_module(self, n_in: int, n_out: int):
        """The network for `n_in` input columns and `n_out` outputs."""

    @abc.abstractmethod
    def _n_outputs(self) -> int:
        """The network's output width now (classes, heads, ...)."""

    @abc.abstractmethod
    def _prepare_targets(self, Y: np.ndarray) -> np.ndarray:
        """Buffered targets (B,) or (B, K) -> the network's targets (class indices, scaled values)."""

    def _loss_per_sample(self, out, target):
        """Hook: per-sample training losses (B,) of outputs `out` (torch) against `target`."""
        raise NotImplementedError(f"{type(self).__name__} gives neither _loss_per_sample nor _train_forward")

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, s: dict):
        pass

    def save(self, path):
        """Write the learner (parameters and state) to `path` atomically; see `streamnn.load`."""
        save(self, path)

    @classmethod
    def load(cls, path, **params):
        """Read a learner written by `save`; pass any non-plain parameter (e.g. `module=MyNet`).

        Refuses (`streamnn.checkpoint.CheckpointError`) a file holding another class of learner."""
        return _load(path, params, expect=cls)


def _pad_cols(a: np.ndarray, width: int) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] < width:
        return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), np.nan)], axis=1)
    return a
