"""Classifiers: `MLPClassifier` and `TorchClassifier` (your own `nn.Module`).

>>> from river import datasets, evaluate, metrics
>>> model = MLPClassifier(hidden=(16,), seed=1)
>>> metric = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
>>> metric.get() > 0.8
True
>>> sorted(model.predict_proba_one({"empty_server_form_handler": 1.0}))
[False, True]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from river import base

from .base import TorchLearner
from .schedule import check_lengths
from .linear_classifier import LinearExpertMixin
from .neighbors import MEMORY as NEIGHBOUR_MEMORY, NeighbourMixin
from .modules import MLP, grow_output, last_linear, members_of

__all__ = ["TorchClassifier", "MLPClassifier"]

_LOSSES = {"cross_entropy", "ce", "log_loss"}

# Defaults chosen by benchmarks/run.py (see benchmarks/RESULTS.md)
DEFAULTS = dict(optimizer="adam", lr=0.007, batch_size=64, update_every=16, warmup=5000, replay=1.0)
# MLPClassifier's: three members trained as one batched network, larger batches, less replay
# (issue 15; benchmarks/results/core_lr.md, rounds 3 and 4)
MLP_DEFAULTS = {**DEFAULTS, "members": 3, "batch_size": 128, "replay": 0.5, "lr_spread": 1.0, "neighbors": 10}


def no_label(y) -> bool:
    """Whether `y` is a missing label: None, or NaN (how pandas shows a missing value; NaN != NaN
    would make every such row a class of its own)."""
    return y is None or (isinstance(y, float) and y != y)


class TorchClassifier(TorchLearner, base.MiniBatchClassifier):
    """A streaming classifier around your own `nn.Module`.

    Parameters
    ----------
    module
        An `nn.Module` class, built lazily as `module(n_features=..., n_outputs=..., **module_kwargs)`.
        To let features and classes appear mid-stream, its first `nn.Linear` must read the
        features and its last `nn.Linear` produce the logits.
    module_kwargs
        Extra keyword arguments for `module`.
    loss
        "cross_entropy", or a callable `(logits, target_index) -> loss` (per sample or scalar).
    optimizer
        "sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", or a `torch.optim` class.
    lr
        Initial learning rate.
    batch_size
        Samples per optimizer step (the most recent ones).
    update_every
        One optimizer step every this many samples: per-event training costs 1/update_every of a
        step; each sample is seen about batch_size/update_every times.
    warmup
        Step after every sample for the first `warmup` samples (when the model is far from
        converged and each step counts most), then every `update_every`.
    replay
        Fraction of each batch drawn from a reservoir of older samples (0 = off).
    weight_decay
        L2 penalty passed to the optimizer.
    grad_clip
        Clip the gradient norm to this value (None = off).
    scale_inputs
        "welford" (running mean/variance), "ewm" (follows drift) or None.
    lr_control
        "plateau" (the default here: `PlateauLR()`, ReduceLROnPlateau-style, with drift re-warm),
        "plateau_floor" (the same with a floor at lr/10; `MLPClassifier`'s default),
        "stream" (`StreamLR()`: plateau control on an event-smoothed loss, floor at lr/10, recovery
        when the loss rises, drift re-warm; opt-in, see benchmarks/results/core_lr.md), a
        `StreamLR(...)` / `PlateauLR(...)`, or None (constant rate).
    classes
        Labels known up front (optional); others are still added when seen.
    device
        "cpu", "cuda" or "auto".
    seed
        Fixes the initial weights, dropout and replay sampling.
    optimizer_kwargs
        Extra optimizer arguments (e.g. `{"momentum": 0.9}` for SGD).

    Examples
    --------
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self, n_features, n_outputs, width=8):
    ...         super().__init__()
    ...         self.body = nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_outputs))
    ...     def forward(self, x):
    ...         return self.body(x)
    >>> model = TorchClassifier(Net, {"width": 4}, seed=0, update_every=1, batch_size=1)
    >>> for _ in range(20):
    ...     model.learn_one({"a": 1.0}, "yes"); model.learn_one({"a": -1.0}, "no")
    >>> model.predict_one({"a": 1.0}), model.predict_one({"a": -1.0})
    ('yes', 'no')
    """

    _multiclass = True
    _SHIFT_AFTER = 16   # inputs follow a lasting level shift (`RunningStats.shift_after`)

    def __init__(self, module, module_kwargs: dict | None = None, loss="cross_entropy",
                 optimizer="adam", lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                 update_every: int = DEFAULTS["update_every"], warmup: int = DEFAULTS["warmup"],
                 replay: float = DEFAULTS["replay"],
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control="plateau", classes: tuple | None = None,
                 device: str = "cpu", seed: int | None = None, optimizer_kwargs: dict | None = None):
        self.module = module
        self.module_kwargs = module_kwargs
        self.classes = classes
        self._init_common(optimizer=optimizer, lr=lr, batch_size=batch_size, update_every=update_every,
                          warmup=warmup, replay=replay, loss=loss, weight_decay=weight_decay,
                          grad_clip=grad_clip, scale_inputs=scale_inputs, lr_control=lr_control,
                          device=device, seed=seed, optimizer_kwargs=optimizer_kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"module": _TestNet, "module_kwargs": {"width": 8}}

    def _reset(self):
        super()._reset()
        self.classes_ = []
        self._index = {}
        self._columns_cache = (None, None)
        for c in self.classes or ():
            self._add_class(c)

    # -- classes -----------------------------------------------------------------------------

    def _add_class(self, y) -> int:
        i = self._index[y] = len(self.classes_)
        self.classes_.append(y)
        if self.module_ is not None and self._n_outputs() != self._out_width:
            k = members_of(self.module_)   # an ensemble's outputs are output-major (O * k)
            lin, _ = last_linear(self.module_, self._out_width * k)
            grow_output(lin, self._n_outputs() * k, self.optimizer_)
            self._out_width = self._n_outputs()
            self._invalidate()
        return i

    def _n_outputs(self) -> int:
        return max(2, len(self.classes_))

    def _build(self, n_in):
        super()._build(n_in)
        self._out_width = self._n_outputs()

    def _make_module(self, n_in, n_out):
        return self.module(n_features=n_in, n_outputs=n_out, **(self.module_kwargs or {}))

    def _prepare_targets(self, Y: np.ndarray) -> np.ndarray:
        return Y.astype(np.int64)

    def _loss_per_sample(self, out, target):
        if out.dim() == 3:   # (B, O, K): K member networks, each on its own loss; their mean
            B, O, K = out.shape
            per = self._loss_per_sample(out.permute(0, 2, 1).reshape(B * K, O), target.repeat_interleave(K))
            return per.view(B, K).mean(dim=1)
        if callable(self.loss):
            per = self.loss(out, target)
            return per if per.dim() == 1 else per.expand(out.shape[0])
        if self.loss not in _LOSSES:
            raise ValueError(f"loss={self.loss!r}: use 'cross_entropy' or a callable")
        return F.cross_entropy(out, target, reduction="none")

    def _fast_loss(self):
        return "ce" if isinstance(self.loss, str) and self.loss in _LOSSES else None

    def _extra_state(self):
        return {"classes": list(self.classes_)}

    def _load_extra_state(self, s):
        self.classes_, self._index = [], {}
        for c in s["classes"]:
            self._index[c] = len(self.classes_)
            self.classes_.append(c)

    # -- river API ---------------------------------------------------------------------------

    def learn_one(self, x: dict, y, w: float = 1.0) -> None:
        if no_label(y):
            return
        i = self._index.get(y)
        if i is None:
            i = self._add_class(y)
        self._learn_row(self.features_.row(x), i, w)

    def learn_many(self, X: pd.DataFrame, y: pd.Series, w: pd.Series | None = None) -> None:
        check_lengths(X, y, w)
        codes, fresh = self._codes(y.tolist() if isinstance(y, pd.Series) else list(y))
        self._learn_frame(X, codes, None if w is None else np.asarray(w, dtype=float), self._encode, fresh)

    def _encode(self, label) -> int:
        i = self._index.get(label)
        return self._add_class(label) if i is None else i

    def _code(self, label) -> float:
        """The class index of `label` (added if new), NaN for a missing label (`no_label`)."""
        return math.nan if no_label(label) else self._encode(label)

    def _codes(self, labels: list):
        """Labels -> (class indices as floats, NaN for None; {row: label} where a label is first
        seen), without side effects: the classes are added by `_encode` at those rows' turn."""
        get = self._index.get
        codes = [get(t) for t in labels]
        if None not in codes:
            return np.array(codes, dtype=np.float64), None
        new, fresh = {}, {}
        for r, t in enumerate(labels):
            if codes[r] is None and not no_label(t):
                i = new.get(t)
                if i is None:
                    i = new[t] = len(self.classes_) + len(new)
                    fresh[r] = t
                codes[r] = i
        return np.array([math.nan if i is None else i for i in codes], dtype=np.float64), fresh

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        logits = self._forward(Z)[..., : len(self.classes_)].astype(np.float64)
        two = logits.shape[-1] == 2                       # the same values, without a reduction
        logits = logits - (np.maximum(logits[..., :1], logits[..., 1:]) if two else
                           logits.max(axis=-1, keepdims=True))
        e = np.exp(logits)
        return e / (e[..., :1] + e[..., 1:] if two else e.sum(axis=-1, keepdims=True))

    def predict_proba_one(self, x: dict) -> dict:
        n = len(self.classes_)
        if self.module_ is None:
            return {c: 1.0 / n for c in self.classes_}
        logits = self._forward(self._scale(self.features_.row(x, grow=False)))[:n].tolist()
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        total = math.fsum(e)
        return {c: v / total for c, v in zip(self.classes_, e)}

    def predict_one(self, x: dict):
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.get) if proba else None

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self._proba_frame(X), index=X.index, columns=self._columns())

    def _proba_frame(self, X: pd.DataFrame) -> np.ndarray:
        n = len(self.classes_)
        if self.module_ is None or not len(X):   # untrained, or an empty frame
            return np.full((len(X), n), 1.0 / max(n, 1))
        return self._proba(self._scale(self.features_.frame(X, grow=False)))

    def _columns(self) -> pd.Index:
        """The classes as the columns of a DataFrame: what `columns=self.classes_` would build,
        kept (a fresh view each call) while the classes stay the same objects."""
        key, cols = getattr(self, "_columns_cache", (None, None))   # absent in older pickles
        classes = self.classes_
        if key is None or len(key) != len(classes) or any(a is not b for a, b in zip(key, classes)):
            cols = pd.DataFrame(np.empty((0, len(classes))), columns=classes).columns
            self._columns_cache = (list(classes), cols)
        return cols.view()

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if not self.classes_:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        if type(self).predict_proba_many is TorchClassifier.predict_proba_many:
            P = self._proba_frame(X)   # the probabilities without building their DataFrame
        else:
            P = self.predict_proba_many(X).to_numpy()
        labels = np.empty(len(self.classes_), dtype=object)
        labels[:] = self.classes_
        return pd.Series(labels[P.argmax(axis=1)], index=X.index)


class MLPClassifier(NeighbourMixin, LinearExpertMixin, TorchClassifier):
    """A streaming multilayer-perceptron classifier (binary and multi-class).

    Parameters
    ----------
    hidden
        Hidden layer sizes.
    activation
        "relu", "tanh", "elu", "selu", "gelu", "mish", ... "elu" (numpy backend) measured better
        on river's Phishing (0.9066 against 0.8993 mean of 10 seeds, its ternary codes) and worse on
        Agrawal, Mixed and one abrupt drift (-0.01 to -0.02): not the default
        (benchmarks/results/core_lr.md, round 7).
    dropout
        Inverted dropout after each hidden layer (off at prediction).
    norm
        None, "layer" or "stream" (`StreamingNorm`, exact at batch size 1).
    init
        "default", "xavier"/"glorot" or "he"/"kaiming".
    members
        Train this many networks of this shape, each from its own initial weights, as one batched
        network (one forward and one backward for all; `MLP(members=...)`); predictions average
        their logits. 3 by default, with `batch_size=128` and `replay=0.5`: more accurate than one
        network (`members=1, batch_size=64, replay=1.0`, the defaults before issue 15) on river's
        Phishing, Bananas and ImageSegments and on the drift streams measured, at about 1.3x its
        time per event (benchmarks/results/core_lr.md, rounds 3 and 4; drift.md).
    lr_spread
        With `members`: member 0 trains at `lr * lr_spread`, the others at `lr` (a per-member
        learning rate, one batched step: `MLP(member_lr=...)`); 1.0 (the default) = all at `lr`.
        `lr_spread=3.0` raised Bananas by 0.004 (worst and mean of 10 seeds) and recovered faster
        after an abrupt drift, but cost ~0.001 on ImageSegments and Phishing's mean, so it is not
        the default (issue 15, benchmarks/results/core_lr.md round 5).
    linear
        Linear experts next to the network (`streamnn.linear_classifier`): logistic regressions on
        the inputs the network sees, learning from the first event, hedge-mixed with the network by
        recent prequential log loss (`linear_.weights()`). Faster after an abrupt drift of a linear
        concept and better after gradual ones, but slightly lower on Bananas and ~1.4x the time per
        event, so off by default (benchmarks/results/core_lr.md, session 9).
    neighbors
        A nearest-neighbour vote next to the network (`streamnn.neighbors`): the `neighbors`
        nearest of the last 1,000 rows the network saw (scaled as it saw them) vote on the class,
        and the vote is mixed with the network's probabilities by weights that follow
        exponentiated gradient on the mixture's log loss (`neighbors_.w`: network, vote). 10 by
        default since session 12: river's Bananas 0.880-0.883 -> 0.892-0.893 (worst of seeds 0-9
        and 10-19), faster after abrupt and gradual drifts of non-linear concepts, Phishing
        unchanged, ImageSegments -0.001; 1.2-1.4x the time per event, about 1.7x in frames of 64
        (benchmarks/results/core_lr.md, round 6). 0 = the network alone.
        Off beyond 128 inputs (`neighbors.MAX_INPUTS`).
    lr_control
        As in `TorchClassifier`; the default here is "plateau_floor" (`PlateauLR(min_lr_ratio=0.1)`:
        plateau control that never goes below lr/10, so that the model keeps following drift).
    loss, optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, classes, device, seed, optimizer_kwargs
        As in `TorchClassifier` (but `batch_size=128` and `replay=0.5` by default, see `members`).
        After a drift re-warm the model steps after every sample for `DRIFT_WARMUP` (1,000)
        samples and empties its replay reservoir.

    Examples
    --------
    >>> model = MLPClassifier(hidden=(8,), seed=42)
    >>> model.learn_one({"x": 1.0}, "a")
    >>> model.predict_proba_one({"x": 1.0})
    {'a': 1.0}
    """

    def __init__(self, hidden: tuple = (32,), activation: str = "relu", dropout: float = 0.0,
                 norm: str | None = None, init: str = "default", members: int = MLP_DEFAULTS["members"],
                 loss="cross_entropy", optimizer="adam", lr: float = MLP_DEFAULTS["lr"],
                 batch_size: int = MLP_DEFAULTS["batch_size"], update_every: int = MLP_DEFAULTS["update_every"],
                 warmup: int = MLP_DEFAULTS["warmup"], replay: float = MLP_DEFAULTS["replay"],
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control="plateau_floor", classes: tuple | None = None,
                 device: str = "cpu", seed: int | None = None, optimizer_kwargs: dict | None = None,
                 lr_spread: float = MLP_DEFAULTS["lr_spread"], linear: bool = False,
                 neighbors: int = MLP_DEFAULTS["neighbors"]):
        if isinstance(neighbors, bool) or not isinstance(neighbors, int) or not 0 <= neighbors <= NEIGHBOUR_MEMORY:
            raise ValueError(f"neighbors={neighbors!r}: use the number of nearest neighbours that vote "
                             f"(e.g. 10; at most {NEIGHBOUR_MEMORY:,}, the rows the vote keeps), or 0 for "
                             "the network alone")
        self.neighbors = neighbors
        if not isinstance(linear, bool):
            raise ValueError(f"linear={linear!r}: use True (linear experts next to the network) or False")
        self.linear = linear
        if not (isinstance(lr_spread, (int, float)) and lr_spread > 0):
            raise ValueError(f"lr_spread={lr_spread!r}: use a positive number (1.0 = every member at lr)")
        self.lr_spread = lr_spread
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.init = init
        self.members = members
        super().__init__(MLP, None, loss=loss, optimizer=optimizer, lr=lr, batch_size=batch_size,
                         update_every=update_every, warmup=warmup, replay=replay, weight_decay=weight_decay,
                         grad_clip=grad_clip, scale_inputs=scale_inputs, lr_control=lr_control,
                         classes=classes, device=device, seed=seed, optimizer_kwargs=optimizer_kwargs)

    DRIFT_WARMUP = 1000
    # Parameters added after checkpoints were written, and the value they had before (one network;
    # every member at lr): a runtime checkpoint without them resumes where the config says so.
    PARAMS_BEFORE = {"members": 1, "lr_spread": 1.0, "linear": False, "neighbors": 0}

    def _get_params(self):
        params = super()._get_params()
        params.pop("module", None)
        params.pop("module_kwargs", None)
        return params

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": (8,)}

    def _make_module(self, n_in, n_out):
        k, spread = self.members, float(self.lr_spread)
        return MLP(n_in, n_out, hidden=tuple(self.hidden), activation=self.activation, dropout=self.dropout,
                   norm=self.norm, init=self.init, members=k,
                   member_lr=(spread,) + (1.0,) * (k - 1) if k > 1 and spread != 1.0 else None)

    def _extra_state(self):
        return {**super()._extra_state(), "members": self.members, "lr_spread": self.lr_spread}

    def load_state_dict(self, s: dict):
        extra = s.get("extra", {})
        if s.get("built"):
            for name, value in self.PARAMS_BEFORE.items():   # saved before the parameter existed:
                if name not in extra:                          # resumed as it was trained
                    setattr(self, name, value)
            # parameters that shape the state: the saved value must be the learner's (lr_spread
            # only matters with several members)
            for name in ("lr_spread", "linear", "neighbors"):
                saved, have = extra.get(name, getattr(self, name)), getattr(self, name)
                if name == "lr_spread" and extra.get("members", 1) <= 1:
                    continue
                if saved != have:
                    raise ValueError(f"this state was trained with {name}={saved!r}, the learner has "
                                     f"{name}={have!r}: build MLPClassifier({name}={saved!r}, ...) to resume it")
        return super().load_state_dict(s)


class _TestNet(torch.nn.Module):
    def __init__(self, n_features, n_outputs, width=8):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_features, width), torch.nn.Tanh(),
                                        torch.nn.Linear(width, n_outputs))

    def forward(self, x):
        return self.body(x)
