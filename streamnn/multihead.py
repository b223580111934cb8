"""The shared core of the multi-output learners: target registry, masked per-head losses, growth
of heads and state (`_MultiOutput`), and `SharedTrunkNet` (a user trunk plus one linear layer
holding every head). The public learners are in `streamnn.multioutput`.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .backends.losses import MultiHead
from .base import TorchLearner
from .schedule import check_lengths
from .features import _sort_key
from .modules import MLP, first_linear, grow_input, grow_output
from .normalization import RunningStats
from .regression import _LOSSES

__all__ = ["SharedTrunkNet", "KINDS"]

KINDS = ("regression", "binary", "classification")
_TORCH_LOSSES = {   # the regressors' per-sample losses, plus binary cross-entropy for binary heads
    **_LOSSES, "bce": lambda o, t: F.binary_cross_entropy_with_logits(o, t, reduction="none")}
_REG_LOSSES = tuple(_LOSSES)


class SharedTrunkNet(nn.Module):
    """A user trunk, then one linear layer holding every head: (B, F) or (B, T*F) -> (B, O).

    The trunk is built as `trunk(n_features=F, width=width, **trunk_kwargs)` and maps (B, F), or
    (B, T, F) when `window=T > 1`, to (B, width).
    """

    def __init__(self, trunk, n_features: int, n_outputs: int, width: int, window: int = 1, **trunk_kwargs):
        super().__init__()
        self.window = window
        self.trunk = trunk(n_features=n_features, width=width, **trunk_kwargs)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window > 1:
            x = x.view(x.shape[0], self.window, -1)   # (B, T*F) -> (B, T, F), time-major rows
        return self.head(self.trunk(x))              # (B, width) -> (B, O)


class _MultiOutput(TorchLearner):
    """Target registry, masked per-head losses, growth and state shared by the three learners."""

    _SHIFT_AFTER = 16   # inputs and targets follow a lasting level shift (`RunningStats.shift_after`)

    def _setup(self, params: dict):
        params = {k: v for k, v in params.items() if k not in ("self", "__class__")}
        for k, v in params.items():
            setattr(self, k, v)
        if not (self.trunk == "mlp" or isinstance(self.trunk, type)):
            raise ValueError(f"trunk={self.trunk!r}: use 'mlp' or an nn.Module class taking (n_features, width)")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window={self.window!r}: use an int >= 1 (1 = no window)")
        for name, kind in (getattr(self, "heads", None) or {}).items():
            if kind not in KINDS:
                raise ValueError(f"heads[{name!r}]={kind!r}: use one of {KINDS}")
        losses = params.get("loss", "mse")
        for name in (losses.values() if isinstance(losses, dict) else [losses]):
            if name not in _REG_LOSSES:
                raise ValueError(f"loss={name!r}: use one of {sorted(_REG_LOSSES)} (or a dict target -> name)")
        accepted = [k for k in inspect.signature(TorchLearner._init_common).parameters if k != "self"]
        kwargs = {k: params[k] for k in accepted if k in params}   # each learner's own defaults only
        kwargs.setdefault("loss", None)   # multi-label heads: binary cross-entropy, no choice
        self._init_common(**kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": (8,)}

    def _reset(self):
        super()._reset()
        self.targets_, self.kinds_, self.cols_, self.classes_ = [], [], [], []
        self._slot, self._class_index = {}, []
        self.n_out_ = 0
        self.target_scaler_ = RunningStats(shift_after=self._SHIFT_AFTER)
        self.history_ = None        # window mode: the last window - 1 learned rows (T - 1, F)
        self._loss_plan = self._col0 = None
        for name, kind in (getattr(self, "heads", None) or {}).items():
            self._add_target(name, kind)

    # -- targets -----------------------------------------------------------------------------

    def _kind_of(self, name, value) -> str:
        """The kind of a target first seen mid-stream (bool -> binary, number -> regression)."""
        if isinstance(value, (bool, np.bool_)):
            return "binary"
        return "regression" if isinstance(value, numbers.Real) else "classification"

    def _add_target(self, name, kind: str):
        slot = self._slot[name] = len(self.targets_)
        self.targets_.append(name)
        self.kinds_.append(kind)
        self.cols_.append([])
        self.classes_.append([])
        self._class_index.append({})
        if kind != "classification":
            self._add_column(slot, 0.0)
        self.target_scaler_.grow(slot + 1)
        for buf in (self.buffer_, self.reservoir_):
            if buf is not None:
                buf.grow_targets(slot + 1)
        self._loss_plan = None

    def _add_column(self, slot: int, bias: float):
        """Append one output unit for `slot`; every existing unit keeps its weights and output."""
        col = self.n_out_
        self.cols_[slot].append(col)
        self.n_out_ += 1
        self._loss_plan = self._col0 = None
        if self.module_ is not None:
            lin = self._head()
            grow_output(lin, self.n_out_, self.optimizer_)
            with torch.no_grad():
                lin.bias[col] = bias
            self._invalidate()

    def _head(self) -> nn.Linear:
        return self.module_.net[-1] if isinstance(self.module_, MLP) else self.module_.head

    def _class(self, slot: int, label) -> int:
        i = self._class_index[slot].get(label)
        if i is None:
            i = self._class_index[slot][label] = len(self.classes_[slot])
            self.classes_[slot].append(label)
            cols = self.cols_[slot]
            bias = float(self._head().bias.detach()[cols].min()) if cols and self.module_ is not None else 0.0
            self._add_column(slot, bias)   # a new class starts as the least likely one
        return i

    def _value(self, slot: int, v) -> float:
        kind, name = self.kinds_[slot], self.targets_[slot]
        if kind == "classification":
            return float(self._class(slot, v))
        if kind == "binary":
            if isinstance(v, (bool, np.bool_)) or v in (0, 1):
                return float(bool(v))
            raise TypeError(f"label {name!r} is {v!r}; a binary head needs True/False (or 0/1); "
                            f"declare it as 'classification' in heads=... for other labels")
        try:
            v = float(v)
        except OverflowError:   # an integer beyond the float range: like inf, missing
            return math.nan
        except (TypeError, ValueError):
            raise TypeError(f"target {name!r} is {v!r}, not a number; declare it as 'classification' "
                            f"in heads=... or convert it to a float") from None
        return v if math.isfinite(v) else math.nan

    def _encode(self, y: dict):
        """A target dict -> a (K,) vector (NaN = missing), growing heads; None if nothing present."""
        new = [k for k in y if k not in self._slot and _present(y[k])]
        for k in sorted(new, key=_sort_key):
            self._add_target(k, self._kind_of(k, y[k]))
        t = np.full(len(self.targets_), np.nan)
        for k, v in y.items():
            slot = self._slot.get(k)
            if slot is not None and _present(v):
                t[slot] = self._value(slot, v)
        return None if np.isnan(t).all() else t

    # -- network -----------------------------------------------------------------------------

    def _n_outputs(self) -> int:
        return self.n_out_

    def _make_module(self, n_in, n_out):
        if self.trunk == "mlp":
            return MLP(n_in, n_out, hidden=tuple(self.hidden), activation=self.activation, dropout=self.dropout)
        width = self.hidden[-1] if self.hidden else 32
        return SharedTrunkNet(self.trunk, n_in // self.window, n_out, width, self.window, **(self.trunk_kwargs or {}))

    def _build(self, n_in):
        super()._build(n_in)
        if self.trunk != "mlp":
            self._stochastic = True   # a user trunk may hold dropout inside other layers

    def _grow_inputs(self, n_in):
        if isinstance(self.module_, SharedTrunkNet):   # never grow the head by mistake
            grow_input(first_linear(self.module_.trunk, self.n_in_)[0], n_in, self.optimizer_)
            self.n_in_ = n_in
            self._invalidate()
        else:
            super()._grow_inputs(n_in)

    def _input(self, raw: np.ndarray, learn: bool) -> np.ndarray:
        """Raw row (F,) -> the network's row: itself, or the flattened window (T*F,) time-major."""
        if self.window == 1:
            return raw
        hist = self.history_
        if hist is None:
            hist = np.full((self.window - 1, len(raw)), np.nan)
        Fw = hist.shape[1]   # the feature set is fixed at the first sample in window mode
        r = raw[:Fw] if len(raw) >= Fw else np.concatenate([raw, np.full(Fw - len(raw), np.nan)])
        W = np.concatenate([hist, r[None]])   # (T, F)
        if learn:
            self.history_ = W[1:]
        return W.reshape(-1)

    # -- loss --------------------------------------------------------------------------------

    def _weights(self) -> np.ndarray:
        lw = self.loss_weights or {}
        return np.array([float(lw.get(n, 1.0)) for n in self.targets_])

    def _reg_loss(self, name) -> str:
        loss = getattr(self, "loss", "mse") or "mse"
        return loss.get(name, "mse") if isinstance(loss, dict) else loss

    def _make_loss_plan(self):
        """Heads grouped by loss: [(kind, loss, slots, cols, weights)], and the normalizer."""
        w = self._weights().astype(np.float32)
        plan, groups = [], {}
        for s, kind in enumerate(self.kinds_):
            if kind == "classification":
                if self.cols_[s]:
                    plan.append(("cls", None, s, _index(self.cols_[s]), w[s]))
            else:
                loss = self._reg_loss(self.targets_[s]) if kind == "regression" else "bce"
                groups.setdefault(loss, []).append(s)
        for loss, slots in groups.items():
            plan.append(("out", loss, _index(slots), _index([self.cols_[s][0] for s in slots]), w[slots]))
        return plan, float(max(w.sum(), 1e-12))

    def _get_loss_plan(self):
        if self._loss_plan is None:
            self._loss_plan = self._make_loss_plan()
        return self._loss_plan

    def _loss_per_sample(self, out, T):   # out (B, O), T (B, K) with NaN = missing -> (B,)
        plan, norm = self._get_loss_plan()
        mask = (~torch.isnan(T)).to(out.dtype)   # (B, K)
        T0 = torch.nan_to_num(T)
        per = out.new_zeros(out.shape[0])
        for kind, loss, slots, cols, w in plan:
            if kind == "cls":
                ce = F.cross_entropy(out[:, cols], T0[:, slots].long(), reduction="none")   # (B,)
                per = per + float(w) * ce * mask[:, slots]
            else:
                lo = _TORCH_LOSSES[loss](out[:, cols], T0[:, slots])   # (B, n)
                per = per + (lo * mask[:, slots] * torch.as_tensor(w, device=out.device)).sum(1)
        return per / norm

    def _fast_loss(self):
        """The masked multi-head loss in numpy, where every head's loss has a numpy form."""
        plan = self._get_loss_plan()
        if any(p[1] not in MultiHead.SUPPORTED for p in plan[0] if p[1]):
            return None
        return MultiHead(plan)

    def _select_backend(self):
        refuse = None if self.trunk == "mlp" else f"trunk {self.trunk!r}"
        return backends.select(self.module_, self.optimizer_, self._fast_loss(), self._device,
                               self.grad_clip, self._stochastic, refuse=refuse)

    def _reg_slots(self) -> np.ndarray:
        return np.array([s for s, k in enumerate(self.kinds_) if k == "regression"], dtype=np.int64)

    def _absorb_targets(self, Y):
        if getattr(self, "scale_target", False):
            self.target_scaler_.update(Y)

    def _prepare_targets(self, Y: np.ndarray) -> np.ndarray:   # (B, K) raw -> scaled float32
        r = self._reg_slots()
        if getattr(self, "scale_target", False) and len(r):
            Y = Y.copy()   # scaled and winsorised like a regressor's target (one extreme value never
            Y[:, r] = self.target_scaler_.transform(Y, fill=False)[:, r]   # overflows); NaN (missing) stays
        return Y.astype(np.float32)

    # -- prediction --------------------------------------------------------------------------

    def _outputs(self, X) -> np.ndarray:
        """Features (a dict, or a DataFrame) -> raw network outputs (B, O); no side effects."""
        if isinstance(X, dict):
            rows = self._input(self.features_.row(X, grow=False), learn=False)[None]
        else:
            M = self.features_.frame(X, grow=False)
            if not len(M):   # an empty frame: no rows to run
                return np.zeros((0, self.n_out_), dtype=np.float32)
            rows = np.stack([self._input(r, learn=False) for r in M])
        return self._forward(self._scale(rows))

    def _decode(self, out: np.ndarray | None, n: int) -> dict:
        """Outputs (B, O) -> {target: (B,) value or (B, C) probabilities} (priors when unbuilt)."""
        res = {}
        for s, (name, kind, cols) in enumerate(zip(self.targets_, self.kinds_, self.cols_)):
            if kind == "regression":
                v = out[:, cols[0]].astype(np.float64) if out is not None else np.zeros(n)
                if getattr(self, "scale_target", False):
                    v = v * self.target_scaler_.out_std[s] + self.target_scaler_.mean[s]   # as `inverse`
                res[name] = v
            elif kind == "binary":
                res[name] = _sigmoid(out[:, cols[0]].astype(np.float64)) if out is not None else np.full(n, 0.5)
            elif cols:
                z = out[:, cols].astype(np.float64) if out is not None else np.zeros((n, len(cols)))
                e = np.exp(z - z.max(axis=1, keepdims=True))
                res[name] = e / e.sum(axis=1, keepdims=True)
        return res

    def _first_cols(self, x: dict):
        """Single-column heads only: (names, outputs (K,)) for one event, or None before building."""
        if self.module_ is None:
            return None
        return self._outputs(x)[0][self._cols0()].astype(np.float64)

    def _cols0(self) -> np.ndarray:
        if self._col0 is None:
            self._col0 = np.array([c[0] for c in self.cols_], dtype=np.int64)
        return self._col0

    def _predict(self, X) -> dict:
        n = 1 if isinstance(X, dict) else len(X)
        return self._decode(self._outputs(X) if self.module_ is not None else None, n)

    def _label(self, slot: int, v):
        kind = self.kinds_[slot]
        if kind == "regression":
            return float(v)
        if kind == "binary":
            return bool(v > 0.5)
        return self.classes_[slot][int(np.argmax(v))]

    # -- learning ----------------------------------------------------------------------------

    def learn_one(self, x: dict, y: dict, w: float = 1.0) -> None:
        self._learn_raw(self.features_.row(x), y, w)

    def learn_many(self, X: pd.DataFrame, Y: pd.DataFrame, w: pd.Series | None = None) -> None:
        """Learn a batch: the same schedule (and model) as a loop of `learn_one`; NaN = missing."""
        check_lengths(X, Y, w)
        M = self.features_.frame(X)
        ws = None if w is None else np.asarray(w, dtype=float)
        for i, y in enumerate(Y.to_dict("records") if isinstance(Y, pd.DataFrame) else Y):
            self._learn_raw(M[i], y, 1.0 if ws is None else float(ws[i]))

    def _learn_raw(self, raw: np.ndarray, y: dict, w: float):
        t = self._encode(y)
        row = self._input(raw, learn=True)
        if t is None:
            self.n_skipped_ += 1
            return
        self._learn_row(row, t, w)

    # -- state -------------------------------------------------------------------------------

    def _extra_state(self):
        s = {"targets": list(self.targets_), "kinds": list(self.kinds_), "cols": [list(c) for c in self.cols_],
             "classes": [list(c) for c in self.classes_], "n_out": self.n_out_,
             "target_scaler": self.target_scaler_.state_dict()}
        if self.history_ is not None:
            s["history"] = torch.from_numpy(self.history_.copy())
        return s

    def _load_extra_state(self, s):
        self.targets_, self.kinds_ = list(s["targets"]), list(s["kinds"])
        self.cols_, self.classes_ = [list(c) for c in s["cols"]], [list(c) for c in s["classes"]]
        self._slot = {n: i for i, n in enumerate(self.targets_)}
        self._class_index = [{c: i for i, c in enumerate(cs)} for cs in self.classes_]
        self.n_out_ = s["n_out"]
        self.target_scaler_.load_state_dict(s["target_scaler"])
        self.history_ = s["history"].numpy().copy() if "history" in s else None
        self._loss_plan = self._col0 = None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))   # no overflow for large |z|


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def _index(idx: list):
    """A slice when `idx` is a contiguous run (cheaper than a gather), else an int array."""
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return slice(idx[0], idx[0] + len(idx))
    return np.asarray(idx, dtype=np.int64)
