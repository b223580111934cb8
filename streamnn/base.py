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

import copy
import importlib
import math
import numbers

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .buffering import Reservoir, RingBuffer
from .fastpath import MLPKernel
from .features import FeatureRegistry
from .lr import PlateauLR, StreamLR, check_control, make_control
from .modules import first_linear, grow_input, numpy_forward_plan, run_plan
from .normalization import RunningStats

__all__ = ["TorchLearner", "OPTIMIZERS", "load"]

OPTIMIZERS = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchLearner:
    """Mixin with the lazy build, buffering, training step, prediction path and state.

    Subclasses define `_make_module(n_in, n_out)`, `_n_outputs()`, `_encode_target(y)` (a
    float or a vector for the buffer), `_loss_per_sample(out, target)` -> (B,), and use
    `_forward(Z)` for predictions.
    """

    _TARGET_NAN_SKIPS = True

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
        self.scaler_ = RunningStats(mode=self.scale_inputs or "welford")
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
        self._plan = self._kernel = None
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
        self.n_in_ = n_in
        self._plan = self._kernel = None

    def _grow_inputs(self, n_in: int):
        lin, _ = first_linear(self.module_, self.n_in_)
        grow_input(lin, n_in, self.optimizer_)
        self.n_in_ = n_in
        self._plan = self._kernel = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_plan"] = state["_kernel"] = None   # numpy views must not be copied apart from tensors
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

    def _forward(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows (B, F) or (F,) -> network outputs as numpy, in eval mode, no side effects."""
        if self._plan is None and self._device.type == "cpu":
            self._plan = numpy_forward_plan(self.module_) or False
        if self._plan:
            return run_plan(self._plan, Z)
        module = self.module_
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            out = module(torch.as_tensor(Z, device=self._device))
        module.train(was_training)
        return out.cpu().numpy()

    # -- learning ----------------------------------------------------------------------------

    def _learn_row(self, row: np.ndarray, target, w: float = 1.0):
        if self.module_ is None:
            if len(row) == 0:
                return
            self._build(len(row))
        elif len(row) > self.n_in_:
            self._grow_inputs(len(row))
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
        """Hook: "ce" or "mse" when the numpy kernel (streamnn.fastpath) may run this loss."""
        return None

    def _step(self):
        X, Y, W, p = self._batch()
        self._pending = 0
        kernel = self._kernel
        if kernel is None:
            kernel = self._kernel = self._make_kernel() or False
        if kernel:
            return self._fast_step(kernel, X, Y, W, p)
        dev = self._device
        Z = torch.as_tensor(self._scale(X), device=dev)              # (B, F)
        T = torch.as_tensor(self._prepare_targets(Y), device=dev)     # (B,) or (B, K)
        per = self._train_forward(Z, T)                               # (B,)
        if W.min() == 1.0 and W.max() == 1.0:
            loss = per.mean()
        else:
            Wt = torch.as_tensor(W, dtype=torch.float32, device=dev)
            loss = (per * Wt).sum() / Wt.sum().clamp_min(1e-12)
        self._apply_loss(loss, per[-p:].detach().mean(), p)

    def _apply_loss(self, loss, preq_t, n: int = 1) -> bool:
        """Record the prequential loss `preq_t` (of `n` new samples), then take the optimizer step on `loss` unless it
        is not finite (counted); feeds the lr control. Returns whether a step was taken."""
        total, preq = torch.stack([loss.detach(), preq_t]).tolist()  # one device sync per step
        self.last_loss_ = preq
        if not math.isfinite(total):
            self.n_nonfinite_ += 1
            return False
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.module_.parameters(), self.grad_clip)
        self.optimizer_.step()
        self.n_updates_ += 1
        if self.lr_control_ is not None and self.lr_control_.step(preq, n):
            self._after_drift()
        return True

    def _make_kernel(self):
        loss = self._fast_loss()
        if loss is None or self.grad_clip or self._device.type != "cpu" or self._stochastic:
            return None
        kernel = MLPKernel.build(self.module_, self.optimizer_, loss)
        self._plan = None   # the kernel moved the parameters into one flat buffer
        return kernel

    def _fast_step(self, kernel, X, Y, W, p):
        """The same step as `_step`, computed by the numpy kernel on the shared tensors."""
        res = self.reservoir_
        unit = (self.buffer_.unit and (res is None or res.unit)) or bool((W == 1.0).all())
        per = kernel.step(self._scale(X), self._prepare_targets(Y), None if unit else W)
        tail = per[-p:]
        preq = float(np.add.reduce(tail)) / p if tail.dtype == np.float64 else float(tail.mean())
        self.last_loss_ = preq
        finite = getattr(kernel, "finite", None)   # MLPKernel.step checked it
        if not (np.isfinite(per).all() if finite is None else finite):
            self.n_nonfinite_ += 1
            return
        self.n_updates_ += 1
        if self.lr_control_ is not None and self.lr_control_.step(preq, p):
            self._after_drift()

    def _learn_frame(self, X, Y, w=None, encode=None, fresh=None):
        """The learn_many body: rows go through the same schedule as learn_one, in order.

        `Y` holds the rows' buffer targets, NaN where a row is skipped; a row in `fresh` (row ->
        label) takes `encode(label)` as its target at its turn (a class seen for the first time).
        Between two steps, a run of rows that needs no growth is appended to the buffer at once
        (`_learn_block`); a row that builds or grows the network or adds a class goes through
        `_learn_row`. A list `Y` (None = skip) is encoded row by row with `encode`, if given.
        """
        M, widths = self.features_.frame_rows(X)
        fresh = fresh or {}
        listed = not isinstance(Y, np.ndarray)
        if listed or type(self)._learn_row is not TorchLearner._learn_row:   # row by row
            for i, t in enumerate(Y):
                if i in fresh:
                    t = encode(fresh[i])
                elif listed:
                    if t is None:
                        continue
                    if encode is not None:
                        t = encode(t)
                elif math.isnan(t):
                    continue
                self._learn_row(M[i, : widths[i]], t, 1.0 if w is None else float(w[i]))
            return
        skip = np.isnan(Y)
        rows = (~skip).nonzero()[0] if skip.any() else np.arange(len(Y))   # the rows learned, in order
        if len(rows) == 0:
            return
        cuts = [len(rows)]   # a run of rows ends where the width grows and before a row adding a class
        if widths[rows[0]] != widths[rows[-1]] or fresh:
            wr = widths[rows]
            grows = (wr[1:] != wr[:-1]).nonzero()[0] + 1
            cuts = np.union1d(grows, np.searchsorted(rows, sorted(fresh))).tolist() + cuts
        k, c = 0, 0
        while k < len(rows):
            r = int(rows[k])
            if self.module_ is None or widths[r] != self.n_in_ or r in fresh:
                t = encode(fresh[r]) if r in fresh else Y[r]
                self._learn_row(M[r, : widths[r]], t, 1.0 if w is None else float(w[r]))
                k += 1
                continue
            while cuts[c] <= k:
                c += 1
            n = 1 if self.n_seen_ < self._warm_limit() else max(1, self.update_every - self._pending)
            end = min(k + n, cuts[c])          # the rows up to the next step at most
            self._learn_block(M, rows[k:end], Y, w)
            k = end

    def _learn_block(self, M, rows, Y, w):
        """Learn rows `rows` of `M` (of the network's width) that end at or before the next step:
        `_learn_row` for each, with one buffer write."""
        a, b = int(rows[0]), int(rows[-1]) + 1
        sel = slice(a, b) if b - a == len(rows) else rows
        self.buffer_.extend(M[sel, : self.n_in_], Y[sel], None if w is None else w[sel])
        self.n_seen_ += len(rows)
        self._pending += len(rows)
        if self._pending >= (self.update_every if self.n_seen_ > self._warm_limit() else 1):
            self._step()

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
            s.update(n_in=self.n_in_, module=_to_cpu(dict(self.module_.state_dict())),
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
        if s["built"]:
            self._build(s["n_in"])
            self.module_.load_state_dict(s["module"])
            self.optimizer_.load_state_dict(s["optimizer"])
            self._rng_state = s["rng"].clone()
            if self.lr_control_ is not None and "lr_control" in s:
                self.lr_control_.load_state_dict(s["lr_control"])
        return self

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, s: dict):
        pass

    def save(self, path):
        """Write the learner (parameters and state) to `path` atomically; see `streamnn.load`."""
        checkpoint.save_checkpoint({"learner": _qualified(type(self)), "params": _plain_params(self),
                                    "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path, **params):
        """Read a learner written by `save`; pass any non-plain parameter (e.g. `module=MyNet`).

        Refuses (`streamnn.checkpoint.CheckpointError`) a file holding another class of learner."""
        return _load(path, params, expect=cls)


def load(path, **params):
    """Rebuild a learner saved with `learner.save(path)`, without unpickling any object.

    Only streamnn's own learner classes are rebuilt; parameters that are classes or callables
    (a custom `module`, a loss function) are not stored as code and must be passed again.
    A file that is not a learner checkpoint raises `streamnn.checkpoint.CheckpointError`.
    """
    return _load(path, params)


def _load(path, params: dict, expect=None):
    ck = checkpoint.load_checkpoint(path)
    name = ck.get("learner")
    if not isinstance(name, str) or not isinstance(ck.get("params"), dict) or "state" not in ck:
        raise checkpoint.CheckpointError(f"{path}: a streamnn checkpoint without a learner in it (keys "
                                         f"{sorted(map(str, ck))[:8]}); load it with streamnn.load_checkpoint")
    modname, _, qualname = name.rpartition(".")
    cls = None
    if modname.startswith("streamnn."):
        try:
            cls = getattr(importlib.import_module(modname), qualname)
        except (ImportError, AttributeError):
            cls = None
    if not isinstance(cls, type) or not callable(getattr(cls, "load_state_dict", None)):
        raise checkpoint.CheckpointError(f"{path}: holds a {name}, which is not a streamnn learner of this "
                                         "version; load it with the streamnn version that wrote it")
    if expect is not None and not issubclass(cls, expect):
        raise checkpoint.CheckpointError(f"{path}: holds a {cls.__name__} ({name}), not a {expect.__name__}; "
                                         f"load it with {cls.__name__}.load(path) or streamnn.load(path)")
    kwargs = {}
    for k, v in ck["params"].items():
        if isinstance(v, dict) and "__callable__" in v:
            if k not in params:
                raise ValueError(f"{path} was saved with {k}={v['__callable__']}; pass {k}=... to load it")
        else:
            kwargs[k] = _from_plain(v)
    kwargs.update(params)
    learner = cls(**kwargs)
    try:
        learner.load_state_dict(ck["state"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise checkpoint.CheckpointError(f"{path}: its {cls.__name__} state does not fit a {cls.__name__} "
                                         f"built with these parameters ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:160] if str(e) else ''}); pass the "
                                         "parameters it was saved with") from None
    return learner


def _qualified(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _plain_params(learner) -> dict:
    out = {}
    for k, v in learner._get_params().items():
        out[k] = _to_plain(v)
    return out


def _to_plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return {"__tuple__": [_to_plain(i) for i in v]} if isinstance(v, tuple) else [_to_plain(i) for i in v]
    if isinstance(v, dict):
        return {"__dict__": [[_to_plain(k), _to_plain(i)] for k, i in v.items()]}
    if isinstance(v, PlateauLR):
        return {"__plateau__": v.params()}
    if isinstance(v, StreamLR):
        return {"__streamlr__": v.params()}
    if isinstance(v, numbers.Real):
        return float(v)
    return {"__callable__": _qualified(v) if hasattr(v, "__qualname__") else repr(v)}


def _from_plain(v):
    if isinstance(v, list):
        return [_from_plain(i) for i in v]
    if isinstance(v, dict):
        if "__tuple__" in v:
            return tuple(_from_plain(i) for i in v["__tuple__"])
        if "__dict__" in v:
            return {_from_plain(k): _from_plain(i) for k, i in v["__dict__"]}
        if "__plateau__" in v:
            return PlateauLR(**v["__plateau__"])
        if "__streamlr__" in v:
            return StreamLR(**v["__streamlr__"])
    return v


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)   # a copy: a state must not alias live tensors
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _pad_cols(a: np.ndarray, width: int) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] < width:
        return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), np.nan)], axis=1)
    return a
