"""Multi-output learners: one shared trunk, one head per target, a loss per head.

`MultiTargetRegressor` (y: dict of floats), `MultiLabelClassifier` (y: dict of bools) and
`MultiHeadLearner` (mixed: regression, binary and multi-class heads in one network). The network
is a trunk followed by *one* `nn.Linear` whose output columns are shared out among the targets:
a regression or binary target owns one column, a classification target one column per class.
Columns are only ever appended, so a target (or a class) that appears mid-stream grows the last
layer by one zero-initialized row and leaves every other head's output unchanged.

Targets are buffered as one vector per event (NaN = missing); a missing target contributes no
loss (it is masked), and the loss of an event is `sum_k weight_k * loss_k / sum_k weight_k`.
Regression targets are scaled by their own running mean and deviation.

>>> model = MultiTargetRegressor(hidden=(8,), seed=0, update_every=1, batch_size=8)
>>> for i in range(300):
...     model.learn_one({"x": i % 5}, {"a": 10.0 * (i % 5), "b": 100.0 - i % 5})
>>> pred = model.predict_one({"x": 3})
>>> abs(pred["a"] - 30.0) < 5.0 and abs(pred["b"] - 97.0) < 2.0
True
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from river import base

from .f1threshold import F1Threshold
from .multihead import KINDS, SharedTrunkNet, _MultiOutput, _sigmoid  # noqa: F401 (SharedTrunkNet: public here)
from .regression import REG_DEFAULTS as DEFAULTS   # lr 0.01, as measured in benchmarks/multioutput.py

__all__ = ["MultiTargetRegressor", "MultiLabelClassifier", "MultiHeadLearner", "SharedTrunkNet"]

class MultiHeadLearner(_MultiOutput, base.Estimator):
    """One network with mixed heads: regression, binary and multi-class outputs, a loss each.

    Parameters
    ----------
    heads
        Target name -> "regression", "binary" or "classification", declared up front (optional).
        Targets first seen mid-stream get a head by the type of their value: bool -> "binary",
        a number -> "regression", anything else -> "classification" (declare integer class
        labels here).
    loss_weights
        Target name -> weight of its loss (default 1.0 each).
    trunk
        "mlp" (hidden layers `hidden`, with a numpy prediction path) or an `nn.Module` class
        built as `trunk(n_features=..., width=hidden[-1], **trunk_kwargs)` that maps (B, F), or
        (B, T, F) when `window > 1`, to (B, width); e.g. a GRU over a window.
    hidden, activation, dropout
        The MLP trunk's layer sizes, activation and dropout.
    trunk_kwargs
        Extra keyword arguments for a custom trunk.
    window
        Feed the last `window` learned events (1 = only the current one). In window mode the
        feature set is fixed by the first event and the window advances in `learn_one`.
    loss
        Loss of regression heads: "mse", "l1"/"mae", "huber", "smooth_l1", or a dict target -> name.
        Binary heads use binary cross-entropy, classification heads cross-entropy.
    scale_target
        Learn regression heads on targets scaled by their own running mean and deviation.
    optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `streamnn.MLPClassifier`.

    Examples
    --------
    >>> model = MultiHeadLearner(heads={"temp": "regression", "state": "classification"},
    ...                          loss_weights={"state": 2.0}, hidden=(8,), seed=0)
    >>> for i in range(400):
    ...     on = i % 2 == 0
    ...     model.learn_one({"load": float(on)}, {"temp": 20.0 + 5 * on, "state": "on" if on else "off"})
    >>> pred = model.predict_one({"load": 1.0})
    >>> pred["state"], abs(pred["temp"] - 25.0) < 2.0
    ('on', True)
    """

    def __init__(self, heads: dict | None = None, loss_weights: dict | None = None, trunk="mlp",
                 hidden: tuple = (32,), activation: str = "relu", dropout: float = 0.0,
                 trunk_kwargs: dict | None = None, window: int = 1, loss="mse", scale_target: bool = True,
                 optimizer="adam", lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                 update_every: int = DEFAULTS["update_every"], warmup: int = DEFAULTS.get("warmup", 0),
                 replay: float = DEFAULTS["replay"],
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control="plateau", device: str = "cpu",
                 seed: int | None = None, optimizer_kwargs: dict | None = None):
        self._setup(locals())

    def predict_one(self, x: dict) -> dict:
        """Target -> a float (regression), a bool (binary) or a class label (classification)."""
        pred = self._predict(x)
        return {n: self._label(self._slot[n], v[0]) for n, v in pred.items()}

    def predict_proba_one(self, x: dict) -> dict:
        """Target -> {label: probability} for the binary and classification heads."""
        pred = self._predict(x)
        out = {}
        for n, v in pred.items():
            s = self._slot[n]
            if self.kinds_[s] == "binary":
                out[n] = {False: 1.0 - float(v[0]), True: float(v[0])}
            elif self.kinds_[s] == "classification":
                out[n] = dict(zip(self.classes_[s], v[0].tolist()))
        return out

    def predict_many(self, X: pd.DataFrame) -> pd.DataFrame:
        pred = self._predict(X)
        cols = {n: [self._label(self._slot[n], r) for r in v] for n, v in pred.items()}
        return pd.DataFrame(cols, index=X.index)


class MultiTargetRegressor(_MultiOutput, base.MultiTargetRegressor):
    """Several regression targets from one shared network (y: a dict of floats).

    Each target has its own output unit, its own running target scaling and an optional loss
    weight; a target missing from an event (absent, None or NaN) contributes no loss.

    Parameters
    ----------
    loss_weights, trunk, hidden, activation, dropout, trunk_kwargs, window, loss, scale_target, optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `MultiHeadLearner`.

    Examples
    --------
    >>> model = MultiTargetRegressor(hidden=(8,), seed=0)
    >>> for i in range(200):
    ...     y = {"a": float(i % 3)} if i < 100 else {"a": float(i % 3), "b": 50.0}
    ...     model.learn_one({"x": float(i % 3)}, y)
    >>> sorted(model.predict_one({"x": 1.0}))
    ['a', 'b']
    """

    def __init__(self, loss_weights: dict | None = None, trunk="mlp", hidden: tuple = (32,),
                 activation: str = "relu", dropout: float = 0.0, trunk_kwargs: dict | None = None,
                 window: int = 1, loss="huber", scale_target: bool = True,
                 optimizer="adam", lr: float = 0.001, batch_size: int = 64, update_every: int = 16,
                 warmup: int = 5000, replay: float = 1.0,
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control=None, device: str = "cpu",
                 seed: int | None = None, optimizer_kwargs: dict | None = None):
        self._setup(locals())

    def _kind_of(self, name, value) -> str:
        return "regression"

    def predict_one(self, x: dict) -> dict:
        v = self._first_cols(x)
        K = len(self.targets_)
        if v is None:
            return {n: 0.0 for n in self.targets_}
        if self.scale_target:
            v = v * self.target_scaler_.out_std[:K] + self.target_scaler_.mean[:K]   # as `inverse`
        return dict(zip(self.targets_, v.tolist()))

    def predict_many(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self._predict(X), index=X.index, columns=self.targets_)


class MultiLabelClassifier(_MultiOutput, base.MultiLabelClassifier):
    """Several binary labels from one shared network (y: a dict of bools).

    Each label has one output unit (a sigmoid) trained with binary cross-entropy; a label missing
    from an event contributes no loss, and labels first seen mid-stream get a new unit.

    Parameters
    ----------
    loss_weights, trunk, hidden, activation, dropout, trunk_kwargs, window, optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `MultiHeadLearner`.
    threshold
        `predict_one` says True when the probability is above it.

    Examples
    --------
    >>> model = MultiLabelClassifier(hidden=(8,), seed=0)
    >>> for i in range(300):
    ...     a, b = i % 2 == 0, i % 3 == 0
    ...     model.learn_one({"a": float(a), "b": float(b)}, {"even": a, "third": b})
    >>> model.predict_one({"a": 1.0, "b": 0.0})
    {'even': True, 'third': False}
    """

    def __init__(self, loss_weights: dict | None = None, trunk="mlp", hidden: tuple = (32,),
                 activation: str = "relu", dropout: float = 0.0, trunk_kwargs: dict | None = None,
                 window: int = 1, threshold="auto",
                 optimizer="adam", lr: float = 0.0005, batch_size: int = 64, update_every: int = 16,
                 warmup: int = 5000, replay: float = 1.0,
                 weight_decay: float = 0.0, grad_clip: float | None = None,
                 scale_inputs: str | None = "welford", lr_control=None, device: str = "cpu",
                 seed: int | None = None, optimizer_kwargs: dict | None = None):
        if not (threshold == "auto" or (isinstance(threshold, numbers.Real) and 0.0 <= threshold <= 1.0)):
            raise ValueError(f"threshold={threshold!r}: use 'auto' (tuned online for micro-F1) or a "
                             "probability in [0, 1]")
        self._setup(locals())

    def _reset(self):
        super()._reset()
        self.f1_threshold_ = F1Threshold()

    def _learn_raw(self, raw: np.ndarray, y: dict, w: float):
        """Score the model's own prediction for this event (made before learning on it) into the
        threshold statistics, then learn as every multi-output learner does."""
        if self.threshold == "auto" and self.module_ is not None and self.targets_:
            t = self._encode(y)
            if t is not None:
                row = self._input(raw, learn=False)[: self.n_in_]
                z = self._forward(self._scale(row[None]))[0]
                self.f1_threshold_.update(_sigmoid(z[self._cols0()].astype(np.float64)), t)
        super()._learn_raw(raw, y, w)

    @property
    def threshold_(self) -> float:
        """The probability above which a label is predicted True (tuned online when 'auto')."""
        return self.f1_threshold_.value if self.threshold == "auto" else float(self.threshold)

    def _extra_state(self):
        return {**super()._extra_state(), "f1_threshold": self.f1_threshold_.state_dict()}

    def _load_extra_state(self, s):
        super()._load_extra_state(s)
        if "f1_threshold" in s:
            self.f1_threshold_.load_state_dict(s["f1_threshold"])

    def _kind_of(self, name, value) -> str:
        return "binary"

    def _p(self, x: dict) -> list:
        v = self._first_cols(x)
        return [0.5] * len(self.targets_) if v is None else _sigmoid(v).tolist()

    def predict_proba_one(self, x: dict) -> dict:
        return {n: {False: 1.0 - p, True: p} for n, p in zip(self.targets_, self._p(x))}

    def predict_one(self, x: dict) -> dict:
        th = self.threshold_
        return {n: p > th for n, p in zip(self.targets_, self._p(x))}

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        """P(label is True) for each row and label."""
        return pd.DataFrame(self._predict(X), index=X.index, columns=self.targets_)

    def predict_many(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.predict_proba_many(X) > self.threshold_
