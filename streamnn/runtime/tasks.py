"""What "predict", "learn" and "loss" mean for each kind of learner the loop can run.

The loop dispatches on river's base classes: a classifier or regressor is predicted, then learns
when the target is present; a multi-target regressor does the same with a dict of targets; an
anomaly detector is scored, then learns from every event (its "target" is a label for reports).
Batches go through `learn_many`/`predict_many` when the learner has them (a streamnn learner's
`learn_many` follows exactly the schedule of a loop of `learn_one`), else one event at a time.

>>> import streamnn
>>> task = task_for(streamnn.MLPRegressor())
>>> task.kind, task.target_kind
('regression', 'number')
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from river import base

__all__ = ["Task", "task_for", "frame"]


_INDEXES: dict = {}


def _index(columns: tuple) -> pd.Index:
    """A cached `pd.Index` of column names (building one costs more than the whole frame)."""
    idx = _INDEXES.get(columns)
    if idx is None:
        if len(_INDEXES) > 64:
            _INDEXES.clear()
        idx = _INDEXES[columns] = pd.Index(list(columns), dtype=object)
    return idx


def frame(xs: list, columns=None) -> pd.DataFrame:
    """Feature dicts -> a DataFrame (missing values NaN); columns in first-seen order."""
    if columns is None:
        seen = {}
        for x in xs:
            for k in x:
                seen.setdefault(k, None)
        columns = seen
    columns = tuple(columns)
    nan = math.nan
    arr = np.array([[x.get(c, nan) for c in columns] for x in xs], dtype=np.float64).reshape(len(xs), len(columns))
    return pd.DataFrame(arr, columns=_index(columns), copy=False)


class Task:
    """Predict/learn/loss for one kind of learner; `kind` names it."""

    kind = "regression"
    target_kind = "number"
    supervised = True

    def __init__(self, learner):
        self.many = hasattr(learner, "learn_many") and hasattr(learner, "predict_many")
        self.names: dict = {}   # feature names seen, for learners without a `features_` registry

    def predict(self, learner, X: pd.DataFrame, xs: list) -> list:
        """One output dict per row: at least "prediction" (or "score")."""
        if self.many:
            return [{"prediction": p} for p in learner.predict_many(X).to_numpy(dtype=float).tolist()]
        return [{"prediction": float(learner.predict_one(x))} for x in xs]

    def learn(self, learner, X: pd.DataFrame, xs: list, ys: list) -> None:
        if self.many:
            learner.learn_many(X, pd.Series(ys, index=X.index))
        else:
            for x, y in zip(xs, ys):
                learner.learn_one(x, y)

    def loss(self, out: dict, y, row=None) -> float:
        """The prequential loss of one output against its target (squared error here); a product,
        not a power: an overflow gives inf instead of raising."""
        d = out["prediction"] - y
        return d * d

    # -- the columnar path (streamnn.runtime.columns) ----------------------------------------

    def predict_columns(self, learner, X: pd.DataFrame) -> dict:
        """`predict` as output columns: field name -> list of values, one per row."""
        self._p = learner.predict_many(X).to_numpy(dtype=float)
        return {"prediction": self._p.tolist()}

    def losses(self, fields: dict, ys: list, rows: list) -> tuple:
        """(losses, number correct) of the rows `rows` (their targets `ys[row]`) of the batch
        just predicted by `predict_columns`, each what `loss` gives for that row."""
        p = self._p[rows] - np.array([ys[i] for i in rows], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return (p * p).tolist(), 0


class ClassificationTask(Task):
    kind = "classification"
    target_kind = "label"

    def __init__(self, learner):
        super().__init__(learner)
        self.proba_many = hasattr(learner, "predict_proba_many")
        from ..classification import TorchClassifier

        self._matrix = (isinstance(learner, TorchClassifier)
                        and type(learner).predict_proba_many is TorchClassifier.predict_proba_many)

    def predict(self, learner, X, xs):
        """Outputs carry the predicted class and its probability; the full rows stay for `loss`."""
        if self.proba_many:
            P = learner.predict_proba_many(X)
            classes, M = list(P.columns), P.to_numpy(dtype=float)
        else:
            rows = [learner.predict_proba_one(x) for x in xs]
            classes = list(dict.fromkeys(c for r in rows for c in r))
            M = np.array([[r.get(c, 0.0) for c in classes] for r in rows], dtype=float).reshape(len(rows), len(classes))
        self._index = {c: i for i, c in enumerate(classes)}
        self._P = M
        if not classes:
            return [{"prediction": None, "proba": None} for _ in range(len(xs))]
        best = M.argmax(axis=1)
        return [{"prediction": classes[i], "proba": p} for i, p in zip(best.tolist(), M.max(axis=1).tolist())]

    def loss(self, out, y, row=None):
        """Log loss of the true class (its probability clipped at 1e-15); `row` indexes the batch."""
        j = self._index.get(y)
        p = 0.0 if j is None or row is None else self._P[row, j]
        return -math.log(max(p, 1e-15))

    def predict_columns(self, learner, X):
        if self._matrix:   # a streamnn classifier: the probabilities without their DataFrame
            classes, M = list(learner.classes_), learner._proba_frame(X)
        else:
            P = learner.predict_proba_many(X)
            classes, M = list(P.columns), P.to_numpy(dtype=float)
        self._index, self._P = {c: i for i, c in enumerate(classes)}, M
        if not classes:
            return {"prediction": [None] * len(X), "proba": [None] * len(X)}
        return {"prediction": [classes[i] for i in M.argmax(axis=1).tolist()], "proba": M.max(axis=1).tolist()}

    def losses(self, fields, ys, rows):
        pred, index, P, log = fields["prediction"], self._index, self._P, math.log
        out, correct = [], 0
        for i in rows:
            y = ys[i]
            if pred[i] is None:
                continue   # an untrained model predicts nothing yet: no loss to count
            j = index.get(y)
            out.append(-log(max(0.0 if j is None else P[i, j], 1e-15)))
            correct += pred[i] == y
        return out, correct


class MultiTargetTask(Task):
    kind = "multi_target"

    def predict(self, learner, X, xs):
        if self.many:
            P = learner.predict_many(X)
            cols = list(P.columns)
            return [{"prediction": dict(zip(cols, row))} for row in P.to_numpy(dtype=float).tolist()]
        return [{"prediction": {k: float(v) for k, v in learner.predict_one(x).items()}} for x in xs]

    def learn(self, learner, X, xs, ys):
        if self.many:   # every y has all the targets (the decoder sees to it), in one order
            cols = tuple(ys[0])
            Y = np.array([[y[c] for c in cols] for y in ys], dtype=np.float64)
            learner.learn_many(X, pd.DataFrame(Y, columns=_index(cols), copy=False))
        else:
            for x, y in zip(xs, ys):
                learner.learn_one(x, y)

    def loss(self, out, y, row=None):
        """Mean squared error over the targets (a target never predicted counts its square)."""
        p = out["prediction"]
        return sum((p.get(k, 0.0) - v) * (p.get(k, 0.0) - v) for k, v in y.items()) / max(len(y), 1)


class AnomalyTask(Task):
    kind = "anomaly"
    target_kind = "label"      # the ground truth (0/1, True/False, a name): reports only
    supervised = False

    def __init__(self, learner):
        self.many = hasattr(learner, "score_many") and hasattr(learner, "learn_many")
        self.names: dict = {}

    def predict(self, learner, X, xs):
        if self.many:
            return [{"score": float(s)} for s in np.asarray(learner.score_many(X), dtype=float)]
        return [{"score": float(learner.score_one(x))} for x in xs]

    def learn(self, learner, X, xs, ys=None):
        if self.many:
            learner.learn_many(X)
        else:
            for x in xs:
                learner.learn_one(x)

    def loss(self, out, y, row=None):
        return math.nan

    def predict_columns(self, learner, X):
        return {"score": np.asarray(learner.score_many(X), dtype=float).tolist()}


def task_for(learner) -> Task:
    """The task that matches the learner's river base class."""
    if isinstance(learner, base.AnomalyDetector):
        return AnomalyTask(learner)
    if isinstance(learner, base.MultiTargetRegressor):
        return MultiTargetTask(learner)
    if isinstance(learner, base.Classifier):
        return ClassificationTask(learner)
    if isinstance(learner, base.Regressor):
        return Task(learner)
    raise TypeError(f"{type(learner).__name__} is not a river classifier, regressor, multi-target "
                    "regressor or anomaly detector; the runtime cannot run it")
