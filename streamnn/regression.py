"""Regressors: `MLPRegressor` and `TorchRegressor` (your own `nn.Module`).

Targets are scaled with running statistics before the loss (`scale_target=True`), and
predictions come back in the original units.

>>> from river import datasets, evaluate, metrics
>>> model = MLPRegressor(seed=1, warmup=2000, lr=0.01)
>>> metric = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
>>> metric.get() < 1.0
True
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch.nn.functional as F
from river import base

from .base import TorchLearner
from .schedule import check_lengths
from .classification import DEFAULTS, _TestNet
from .modules import MLP
from .linear_path import LinearPath

# The linear path's widest input: each of its RLS models keeps a (d, d) matrix, so its cost per
# step grows as the square of the width (2.6x the network's time per event at 256 inputs, 1.6x at
# 32-128 in the warm phase); wider inputs learn with the network alone.
LINEAR_MAX_INPUTS = 128
from .normalization import RunningStats

__all__ = ["TorchRegressor", "MLPRegressor"]

# The classifiers' defaults, with the rate that river's TrumpApproval preferred (benchmarks/run.py):
# 0.01 gave MAE 0.589 there, 0.007 gave 0.624.
REG_DEFAULTS = {**DEFAULTS, "lr": 0.01}

_LOSSES = {
    "mse": lambda out, t: F.mse_loss(out, t, reduction="none"),
    "l1": lambda out, t: F.l1_loss(out, t, reduction="none"),
    "mae": lambda out, t: F.l1_loss(out, t, reduction="none"),
    "huber": lambda out, t: F.huber_loss(out, t, reduction="none"),
    "smooth_l1": lambda out, t: F.smooth_l1_loss(out, t, reduction="none"),
}


class TorchRegressor(TorchLearner, base.MiniBatchRegressor):
    """A streaming regressor around your own `nn.Module` (one output).

    Parameters
    ----------
    module
        An `nn.Module` class, built lazily as `module(n_features=..., n_outputs=1, **module_kwargs)`.
    module_kwargs
        Extra keyword arguments for `module`.
    loss
        "mse", "l1"/"mae", "huber", "smooth_l1", or a callable `(pred, target) -> loss`.
    scale_target
        Learn on targets scaled by their running mean and deviation; predict in original units.
    optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `streamnn.TorchClassifier`.
    """

    def __init__(self, module, module_kwargs: dict | None = None, loss="mse", scale_target: bool = True,
                 optimizer="adam", lr: float = REG_DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                 update_every: int = DEFAULTS["update_every"], warmup: int = DEFAULTS["warmup"],
                 replay: float = DEFAULTS["replay"],
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control="plateau", device: str = "cpu",
                 seed: int | None = None, optimizer_kwargs: dict | None = None):
        self.module = module
        self.module_kwargs = module_kwargs
        self.scale_target = scale_target
        self._init_common(optimizer=optimizer, lr=lr, batch_size=batch_size, update_every=update_every,
                          warmup=warmup, replay=replay, loss=loss, weight_decay=weight_decay,
                          grad_clip=grad_clip, scale_inputs=scale_inputs, lr_control=lr_control,
                          device=device, seed=seed, optimizer_kwargs=optimizer_kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"module": _TestNet, "module_kwargs": {"width": 8}}

    def _reset(self):
        super()._reset()
        self.target_scaler_ = RunningStats(1, shift_after=self._SHIFT_AFTER)

    _SHIFT_AFTER = 16   # inputs and targets follow a lasting level shift (`RunningStats.shift_after`)

    def _n_outputs(self) -> int:
        return 1

    def _make_module(self, n_in, n_out):
        return self.module(n_features=n_in, n_outputs=n_out, **(self.module_kwargs or {}))

    def _absorb_targets(self, Y):
        if self.scale_target:
            self.target_scaler_.update(Y.reshape(-1, 1))

    def _learn_unbuilt(self, target):
        if target == target:   # NaN: an event without a label
            self._absorb_targets(np.array([float(target)]))

    def _prior(self, n: int) -> np.ndarray:
        """The prediction before the network exists (no feature seen yet): the running mean of
        the targets (0 before any, or with `scale_target=False`)."""
        return np.full(n, float(self.target_scaler_.mean[0]))

    def _prepare_targets(self, Y: np.ndarray) -> np.ndarray:
        if self.scale_target:   # scaled and clipped like inputs: one extreme target never overflows
            Y = self.target_scaler_.transform(Y.reshape(-1, 1)).reshape(Y.shape)
        return Y.astype(np.float32)

    def _loss_per_sample(self, out, target):
        if out.dim() == 3:   # (B, 1, K): K member networks, each on its own loss; their mean
            B, _, K = out.shape
            per = self._loss_per_sample(out[:, 0].reshape(B * K, 1), target.repeat_interleave(K))
            return per.view(B, K).mean(dim=1)
        out = out[:, 0]
        if callable(self.loss):
            per = self.loss(out, target)
            return per if per.dim() == 1 else per.expand(out.shape[0])
        try:
            return _LOSSES[self.loss](out, target)
        except KeyError:
            raise ValueError(f"loss={self.loss!r}: use one of {sorted(_LOSSES)} or a callable") from None

    def _fast_loss(self):
        return "mse" if self.loss == "mse" else None

    def _unscale(self, out: np.ndarray) -> np.ndarray:
        if self.scale_target:
            return out * self.target_scaler_.out_std[0] + self.target_scaler_.mean[0]   # as `inverse`
        return out

    def _extra_state(self):
        return {"target_scaler": self.target_scaler_.state_dict()}

    def _load_extra_state(self, s):
        self.target_scaler_.load_state_dict(s["target_scaler"])

    # -- river API ---------------------------------------------------------------------------

    def learn_one(self, x: dict, y: float, w: float = 1.0) -> None:
        y = _finite(y)
        if y is None:
            self.n_skipped_ += 1
            return
        self._learn_row(self.features_.row(x), y, w)

    def learn_many(self, X: pd.DataFrame, y: pd.Series, w: pd.Series | None = None) -> None:
        check_lengths(X, y, w)
        Y = _finite_array(y)
        self.n_skipped_ += int(np.isnan(Y).sum())
        self._learn_frame(X, Y, None if w is None else np.asarray(w, dtype=float))

    def _output(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows (n, F) -> (n,), or a row (F,) -> (), predictions in scaled target units."""
        return self._forward(Z)[..., 0]

    def predict_one(self, x: dict) -> float:
        if self.module_ is None:
            return float(self._prior(1)[0])
        return float(self._unscale(self._predict_row(self.features_.row(x, grow=False))))

    def _predict_row(self, row: np.ndarray) -> np.ndarray:
        """A raw row (F,) -> its prediction () in scaled target units (predict_one's)."""
        return self._output(self._scale(row))

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if self.module_ is None:
            return pd.Series(self._prior(len(X)), index=X.index)
        out = self._output(self._scale(self.features_.frame(X, grow=False)))
        return pd.Series(self._unscale(out), index=X.index)


class MLPRegressor(TorchRegressor):
    """A streaming multilayer-perceptron regressor.

    Parameters
    ----------
    hidden, dropout, norm, init
        As in `streamnn.MLPClassifier`.
    members
        Train this many networks as one batched network and average their predictions (as in
        `streamnn.MLPClassifier`); 1 (one network) by default.
    activation
        "tanh" by default (TrumpApproval MAE and Friedman: benchmarks/results/core_lr.md).
    lr_control
        "stream" by default (`StreamLR()`: the rate never falls below lr/10); see `TorchRegressor`.
    linear
        True by default: a linear path next to the network (`streamnn.linear_path.LinearPath`):
        four recursive-least-squares linear models (forgetting factors 1, 0.98, 0.95, 0.9) learn
        from the first event on the inputs and targets as the scalers winsorise them, and the
        prediction mixes them with the network by hedge weights from each one's recent
        prequential absolute error (up to `LINEAR_MAX_INPUTS` = 128 inputs; wider, the network
        alone). A near-linear or drifting stream is tracked from the start
        (TrumpApproval MAE 0.30 against 0.55 without it), and where the network is better it takes
        over (Friedman unchanged): benchmarks/results/core_lr.md,
        session 8. False: the network alone (the default before session 8; a checkpoint written
        then loads with `linear=False`). `linear_.weights()` shows the mix, `linear_.n_reset` the
        blocks refused as not finite.
    loss, scale_target, optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, device, seed, optimizer_kwargs
        As in `TorchRegressor`. After a drift re-warm the model steps after every sample for
        `DRIFT_WARMUP` (1,000) samples and empties its replay reservoir.

    Examples
    --------
    >>> model = MLPRegressor(hidden=(8,), seed=0, update_every=1, batch_size=4)
    >>> for i in range(200):
    ...     model.learn_one({"x": i % 10}, 3.0 * (i % 10) + 100.0)
    >>> abs(model.predict_one({"x": 5}) - 115.0) < 5.0     # original units
    True
    """

    def __init__(self, hidden: tuple = (32,), activation: str = "tanh", dropout: float = 0.0,
                 norm: str | None = None, init: str = "default", members: int = 1, loss="mse", scale_target: bool = True,
                 optimizer="adam", lr: float = REG_DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                 update_every: int = DEFAULTS["update_every"], warmup: int = DEFAULTS["warmup"],
                 replay: float = DEFAULTS["replay"],
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control="stream", device: str = "cpu",
                 seed: int | None = None, optimizer_kwargs: dict | None = None, linear: bool = True):
        self.hidden = hidden
        self.linear = linear
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.init = init
        self.members = members
        super().__init__(MLP, None, loss=loss, scale_target=scale_target, optimizer=optimizer, lr=lr,
                         batch_size=batch_size, update_every=update_every, warmup=warmup, replay=replay,
                         weight_decay=weight_decay, grad_clip=grad_clip, scale_inputs=scale_inputs,
                         lr_control=lr_control, device=device, seed=seed, optimizer_kwargs=optimizer_kwargs)

    DRIFT_WARMUP = 1000

    def _get_params(self):
        params = super()._get_params()
        params.pop("module", None)
        params.pop("module_kwargs", None)
        return params

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": (8,)}

    def _make_module(self, n_in, n_out):
        return MLP(n_in, n_out, hidden=tuple(self.hidden), activation=self.activation,
                   dropout=self.dropout, norm=self.norm, init=self.init, members=self.members)

    # A parameter added after checkpoints were written, and the value it had before (the network
    # alone): a runtime checkpoint without it resumes with `linear = false` in the config.
    PARAMS_BEFORE = {"linear": False}

    # -- the linear path (`linear=True`): RLS models next to the network, blended by hedge --------

    def _reset(self):
        super()._reset()
        self.linear_ = None

    def _build(self, n_in: int):
        super()._build(n_in)
        if self.linear and self.linear_ is None and n_in <= LINEAR_MAX_INPUTS:   # a loaded state brings its own
            self.linear_ = LinearPath(n_in)

    def _grow_inputs(self, n_in: int):
        super()._grow_inputs(n_in)
        if self.linear_ is not None:
            if n_in > LINEAR_MAX_INPUTS:   # its cost grows as the square of the width: the network alone
                self.linear_ = None
            else:
                self.linear_.grow(n_in)

    def _invalidate(self):
        super()._invalidate()
        self._seen = None   # the last predict_one while nothing changed since (`_predict_row`)

    def _predict_row(self, row):
        """As `TorchRegressor._predict_row`; with the linear path, in Python floats after the
        linear models' one product (`LinearPath.blend_one`), and remembered: a `learn_one` of the
        same row next (the prequential pattern) finds the scaled row, the network's output and
        the rest in `_step` instead of computing them again."""
        Z = self._scale(row)
        if self.linear_ is None:
            return super()._output(Z)
        Z = Z.reshape(1, -1)   # a batch of one, as `_step` computes it without a remembered row
        net = super()._output(Z)[0]                    # scaled target units
        seen = self._seen = [row, Z, net, None, None]  # + the row in its own units, net in target units
        if self.linear_.network_only():
            return net
        center, unit = self._target_window()
        raw = seen[3] = self._raw_like(Z)
        net_t = seen[4] = float(self._unscale(net))
        return (self.linear_.blend_one(raw, net_t, center, unit) - center) / unit   # as `_output`

    def _output(self, Z):
        net = super()._output(Z)
        if self.linear_ is None or self.linear_.network_only():
            return net
        Z2 = Z.reshape(1, -1) if Z.ndim == 1 else Z
        center, unit = self._target_window()
        raw = self.linear_.blend(self._raw_like(Z2), self._unscale(net.reshape(-1)), center, unit)
        out = (raw - center) / unit        # back to scaled units (`_unscale` inverts it)
        return out[0] if Z.ndim == 1 else out

    def _raw_like(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows -> the rows in their own units, as winsorised and imputed by the scaler."""
        X = Z.astype(np.float64)
        if self.scale_inputs is not None:
            std, mean = self.scaler_.std, self.scaler_.mean
            if len(mean) == X.shape[1]:   # the usual case, in place: the same operations
                X *= std
                X += mean
            else:
                F = min(X.shape[1], len(mean))
                X[:, :F] = X[:, :F] * std[:F] + mean[:F]
        return X

    def _target_window(self) -> tuple:
        """The target's (mean, deviation) that `_unscale` uses: (0, 1) without `scale_target`."""
        if not self.scale_target:
            return 0.0, 1.0
        return float(self.target_scaler_.mean[0]), float(self.target_scaler_.out_std[0]) or 1.0

    def _step(self):
        """Before the network's step: the hedge scores the predictions made on the new rows (the
        network's and the linear models', with the scalers as they were) and the linear models
        learn the rows; learn_many and learn_one take the same steps, so the same path."""
        seen, self._seen = self._seen, None   # the step changes what a prediction depends on
        if self.linear_ is not None and self._pending:
            X, Y, W = self.buffer_.last(self._pending, copy=False)   # read before the step writes
            center, unit = self._target_window()
            T = self._unscale(self._prepare_targets(Y).astype(np.float64))   # winsorised as the network's
            unit_w = self.buffer_.unit or (W == 1.0).all()
            if len(X) == 1 and seen is not None and seen[0].shape == X[0].shape and (
                    seen[0].tobytes() == X[0].tobytes()):   # predicted just before: the same arrays
                raw = seen[3] if seen[3] is not None else self._raw_like(seen[1])
                net = np.array([seen[4] if seen[4] is not None else float(self._unscale(seen[2]))])
            else:
                Z = self._scale(X)
                raw, net = self._raw_like(Z), self._unscale(self._forward(Z)[:, 0])
            self.linear_.learn(raw, T, net, center, unit, None if unit_w else W)
        super()._step()

    def _extra_state(self):
        s = super()._extra_state()
        if self.linear:   # None: dropped for the width (LINEAR_MAX_INPUTS)
            s["linear"] = None if self.linear_ is None else self.linear_.state_dict()
        return s

    def _load_extra_state(self, s):
        super()._load_extra_state(s)
        if self.linear and "linear" in s:
            self.linear_ = None
            if s["linear"] is not None:
                path = LinearPath(s["linear"]["W"].shape[1] - 1)
                path.load_state_dict(s["linear"])
                self.linear_ = path

    def load_state_dict(self, s: dict):
        if self.linear and s.get("built") and "linear" not in s.get("extra", {}):
            raise ValueError("the state was saved without the linear path (linear=False, or a streamnn "
                             "before session 8); load it with linear=False")
        if not self.linear and "linear" in s.get("extra", {}):
            raise ValueError("the state holds a linear path; load it with linear=True")
        return super().load_state_dict(s)


def _finite_array(y) -> np.ndarray:
    """Targets -> float64 array, NaN where a target is not finite (skipped); as `_finite` each."""
    dtype = getattr(y, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub" and getattr(y, "ndim", 0) == 1:
        if isinstance(y, pd.Series):
            Y = y.to_numpy(dtype=np.float64, copy=True)
        else:
            Y = np.array(y, dtype=np.float64)
        Y[np.isinf(Y)] = np.nan
        return Y
    return np.array([math.nan if t is None else t for t in map(_finite, y)], dtype=np.float64)


def _finite(y):
    """A target as a float; None (skipped) when it is missing or not finite: None, NaN, inf, or
    an integer beyond the float range."""
    if y is None:
        return None
    try:
        y = float(y)
    except OverflowError:
        return None
    except (TypeError, ValueError):
        raise TypeError(f"target {y!r} is not a number; a regressor needs float targets") from None
    return y if math.isfinite(y) else None
