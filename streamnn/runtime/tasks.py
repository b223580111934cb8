"""What "predict", "learn" and "loss" mean for each kind of learner the loop can run.

The loop dispatches on river's base classes: a classifier or regressor is predicted, then learns
when the target is present; a multi-target regressor does the same with a dict of targets; an
anomaly detector is scored, then learns from every event (its "target" is a label for reports).
A task is stateless: `predict` returns a `Predicted` (the output columns, plus what the losses
need), and `losses` reads only that. Batches go through `learn_many`/`predict_many` (a streamnn
learner's `learn_many` follows exactly the schedule of a loop of `learn_one`); a learner without
them is called one event at a time, with the row's non-missing features as its dict.

>>> import streamnn
>>> task = task_for(streamnn.MLPRegressor())
>>> task.kind, task.target_kind
('regression', 'number')
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np
import pandas as pd
from river import base

__all__ = ["Task", "Predicted", "task_for", "frame"]


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
    return matrix_frame(arr, columns)


def matrix_frame(X: np.ndarray, columns) -> pd.DataFrame:
    """A float matrix (n, F) as a DataFrame with the (cached) column index."""
    return pd.DataFrame(X, columns=_index(tuple(columns)), copy=False)


def _dicts(X: pd.DataFrame) -> list:
    """Each row's non-missing features as a dict (for learners without the `*_many` methods)."""
    cols = list(X.columns)
    return [{c: v for c, v in zip(cols, row) if v == v} for row in X.to_numpy(dtype=float).tolist()]


class Predicted(NamedTuple):
    """A batch's predictions: `fields` (output name -> one value per row, in output order) and
    what the losses read: `matrix` (predictions (n,), probabilities (n, C) or (n, T)) and
    `columns` (class or target -> column of `matrix`)."""

    fields: dict
    matrix: np.ndarray | None = None
    columns: dict | None = None


class Task(ABC):
    """Predict / learn / loss for one kind of learner (`kind` names it); stateless."""

    kind: str
    target_kind = "number"
    supervised = True

    def __init__(self, learner):
        self.many = hasattr(learner, "learn_many") and hasattr(learner, "predict_many")

    @abstractmethod
    def predict(self, learner, X: pd.DataFrame) -> Predicted:
        """The outputs of the rows of `X`: at least a "prediction" (or "score") column."""

    def learn(self, learner, X: pd.DataFrame, ys: list) -> None:
        if self.many:
            learner.learn_many(X, pd.Series(ys, index=X.index))
        else:
            for x, y in zip(_dicts(X), ys):
                learner.learn_one(x, y)

    def losses(self, pred: Predicted, ys: list, rows) -> tuple:
        """(losses, number correct) of the rows `rows` (targets `ys[row]`) of `pred`; rows the
        model predicts nothing for yet (an untrained classifier) count no loss."""
        return [], 0


class RegressionTask(Task):
    kind = "regression"

    def predict(self, learner, X):
        if self.many:
            p = learner.predict_many(X).to_numpy(dtype=float)
        else:
            p = np.array([float(learner.predict_one(x)) for x in _dicts(X)], dtype=float)
        return Predicted({"prediction": p.tolist()}, p)

    def losses(self, pred, ys, rows):
        """Squared errors (a product, not a power: an overflow gives inf instead of raising)."""
        rows = list(rows)
        d = pred.matrix[rows] - np.array([ys[i] for i in rows], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return (d * d).tolist(), 0


class ClassificationTask(Task):
    kind = "classification"
    target_kind = "label"

    def __init__(self, learner):
        super().__init__(learner)
        self.proba_many = hasattr(learner, "predict_proba_many")
        from ..classification import TorchClassifier

        self._matrix = (isinstance(learner, TorchClassifier)
                        and type(learner).predict_proba_many is TorchClassifier.predict_proba_many)

    def predict(self, learner, X):
        """Outputs carry the predicted class and its probability; the full rows stay for `losses`."""
        if self._matrix:   # a streamnn classifier: the probabilities without their DataFrame
            classes, M = list(learner.classes_), learner._proba_frame(X)
        elif self.proba_many:
            P = learner.predict_proba_many(X)
            classes, M = list(P.columns), P.to_numpy(dtype=float)
        else:
            probas = [learner.predict_proba_one(x) for x in _dicts(X)]
            classes = list(dict.fromkeys(c for p in probas for c in p))
            M = np.array([[p.get(c, 0.0) for c in classes] for p in probas], dtype=float).reshape(len(X), len(classes))
        index = {c: i for i, c in enumerate(classes)}
        if not classes:
            return Predicted({"prediction": [None] * len(X), "proba": [None] * len(X)}, M, index)
        return Predicted({"prediction": [classes[i] for i in M.argmax(axis=1).tolist()],
                          "proba": M.max(axis=1).tolist()}, M, index)

    def losses(self, pred, ys, rows):
        """Log loss of the true class (its probability clipped at 1e-15)."""
        p, index, P, log = pred.fields["prediction"], pred.columns, pred.matrix, math.log
        out, correct = [], 0
        for i in rows:
            if p[i] is None:
                continue   # an untrained model predicts nothing yet: no loss to count
            y = ys[i]
            j = index.get(y)
            out.append(-log(max(0.0 if j is None else P[i, j], 1e-15)))
            correct += p[i] == y
        return out, correct


class MultiTargetTask(Task):
    kind = "multi_target"

    def predict(self, learner, X):
        if self.many:
            P = learner.predict_many(X)
            cols, M = list(P.columns), P.to_numpy(dtype=float)
            preds = [dict(zip(cols, row)) for row in M.tolist()]
        else:
            preds = [{k: float(v) for k, v in learner.predict_one(x).items()} for x in _dicts(X)]
            cols, M = None, None
        return Predicted({"prediction": preds}, M, cols)

    def learn(self, learner, X, ys):
        if self.many:   # every y has all the targets (the decoder sees to it), in one order
            cols = tuple(ys[0])
            Y = np.array([[y[c] for c in cols] for y in ys], dtype=np.float64)
            learner.learn_many(X, matrix_frame(Y, cols))
        else:
            for x, y in zip(_dicts(X), ys):
                learner.learn_one(x, y)

    def losses(self, pred, ys, rows):
        """Mean squared error over the targets (a target never predicted counts its square)."""
        p, out = pred.fields["prediction"], []
        cols = pred.columns
        if cols and all(len(ys[i]) == len(cols) for i in rows):   # the usual case, as arrays
            try:
                Y = np.array([[ys[i][c] for c in cols] for i in rows], dtype=np.float64).reshape(len(rows), len(cols))
            except KeyError:
                Y = None
            if Y is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    D = pred.matrix[list(rows)] - Y
                    return ((D * D).sum(axis=1) / len(cols)).tolist(), 0
        for i in rows:
            if not p[i]:
                continue   # an untrained model predicts nothing yet: no loss to count
            out.append(_mse(p[i], ys[i]))
        return out, 0


def _mse(p: dict, y: dict) -> float:
    return sum((p.get(k, 0.0) - v) * (p.get(k, 0.0) - v) for k, v in y.items()) / max(len(y), 1)


class MultiLabelTask(MultiTargetTask):
    """Several true / false labels per event (`MultiLabelClassifier`): outputs carry each label's
    prediction and its probability of being true; the loss is the mean binary log loss over the
    labels, and an event counts as correct when every label is right (exact match)."""

    kind = "multi_label"
    target_kind = "flag"

    def __init__(self, learner):
        self.many = hasattr(learner, "learn_many") and hasattr(learner, "predict_proba_many")

    def predict(self, learner, X):
        th = float(getattr(learner, "threshold_", 0.5))
        if self.many:
            P = learner.predict_proba_many(X)
            cols, M = list(P.columns), P.to_numpy(dtype=float)
        else:   # a river multi-label classifier: {label: {False: p0, True: p1}} per row
            probas = [learner.predict_proba_one(x) for x in _dicts(X)]
            cols = list(dict.fromkeys(k for p in probas for k in p))
            M = np.array([[float(p.get(k, {}).get(True, 0.0)) for k in cols] for p in probas],
                         dtype=float).reshape(len(X), len(cols))
        rows = M.tolist()
        preds = [{k: v > th for k, v in zip(cols, row)} for row in rows]
        probas = [dict(zip(cols, row)) for row in rows]
        return Predicted({"prediction": preds, "proba": probas}, M, {k: j for j, k in enumerate(cols)})

    # `learn`: as several targets, the labels as 1.0 / 0.0 (the learner reads them as true / false)

    def losses(self, pred, ys, rows):
        """Mean binary log loss over the labels (probabilities clipped at 1e-15; a label never
        predicted counts p = 0.5), and the number of events with every label right."""
        index, P, preds, log = pred.columns, pred.matrix, pred.fields["prediction"], math.log
        out, correct = [], 0
        for i in rows:
            if not index:
                continue   # an untrained model predicts nothing yet: no loss to count
            y, total = ys[i], 0.0
            for k, v in y.items():
                j = index.get(k)
                p = 0.5 if j is None else P[i, j]
                total -= log(max(p if v else 1.0 - p, 1e-15))
            out.append(total / max(len(y), 1))
            correct += all(preds[i].get(k, False) == v for k, v in y.items())
        return out, correct


class AnomalyTask(Task):
    kind = "anomaly"
    target_kind = "label"      # the ground truth (0/1, True/False, a name): reports only
    supervised = False

    def __init__(self, learner):
        self.many = hasattr(learner, "score_many") and hasattr(learner, "learn_many")

    def predict(self, learner, X):
        if self.many:
            s = np.asarray(learner.score_many(X), dtype=float)
        else:
            s = np.array([float(learner.score_one(x)) for x in _dicts(X)], dtype=float)
        return Predicted({"score": s.tolist()}, s)

    def learn(self, learner, X, ys=None):
        if self.many:
            learner.learn_many(X)
        else:
            for x in _dicts(X):
                learner.learn_one(x)


def task_for(learner) -> Task:
    """The task that matches the learner's river base class."""
    if isinstance(learner, base.AnomalyDetector):
        return AnomalyTask(learner)
    if isinstance(learner, base.MultiTargetRegressor):
        return MultiTargetTask(learner)
    if isinstance(learner, base.MultiLabelClassifier):
        return MultiLabelTask(learner)
    if isinstance(learner, base.Classifier):
        return ClassificationTask(learner)
    if isinstance(learner, base.Regressor):
        return RegressionTask(learner)
    raise TypeError(f"{type(learner).__name__} is not a river classifier, regressor, multi-target "
                    "regressor, multi-label classifier or anomaly detector; the runtime cannot run it")
