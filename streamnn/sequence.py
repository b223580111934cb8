"""Sequence learners: `LSTMClassifier` and `LSTMRegressor` (LSTM, GRU or plain RNN cells).

Two modes:

* `stateful=True` (default): the hidden state is carried from event to event, per key, as in
  Keras' `stateful=True`. Predicting an event costs one cell step (a numpy copy of the cell on the
  CPU). Training is truncated backpropagation through time: the events of a key since its segment
  start (at most `bptt`) are re-run from the segment's stored, detached start state; every
  `update_every` events one optimizer step is taken on all keys with new events, batched. A
  segment that reaches `bptt` events keeps its last half and starts from the state stored there,
  so gradients reach `bptt // 2` to `bptt` events back, while the state itself carries
  information indefinitely.
* `stateful=False`: many-to-one over the last `window` events of the key, run from a zero state
  (what deep-river's rolling estimators do); training batches stack the last `batch_size` windows.

With `key="sensor_id"` every value of that field is its own stream, with its own state and window;
the field is not a feature. `max_keys` bounds memory by forgetting the least recently learned key.

`learn_many(X, y)` follows the schedule of a loop of `learn_one` (the same optimizer steps on the
same segments, wherever the frame boundaries fall) and learns each stretch between two steps at
once: one batched state step per wave of keys and one write into the per-key store
(`streamnn.seqframes`, which states exactly where the result is bit-identical to `learn_one`).

>>> from streamnn.sequence import LSTMClassifier
>>> model = LSTMClassifier(hidden_size=8, seed=1, lr=0.02, update_every=8)
>>> for t in range(600):        # the label is the sign of the last cue, seen up to 20 events ago
...     cue = (1.0 if (t // 20) % 2 else -1.0) if t % 20 == 0 else 0.0
...     model.learn_one({"cue": cue}, (t // 20) % 2 == 1)
>>> model.predict_one({"cue": 0.0})
True
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .classification import TorchClassifier
from .regression import TorchRegressor, _finite
from .schedule import check_lengths
from .seqlearner import MAX_KEYS, SequenceLearner

__all__ = ["LSTMClassifier", "LSTMRegressor", "SequenceLearner"]


_SEQ_DOC = """
    cell
        "lstm", "gru" or "rnn".
    hidden_size, num_layers, dropout
        Width and depth of the recurrent stack; dropout between layers and before the head.
    stateful
        Carry the hidden state from event to event (truncated BPTT), or re-run a window.
    window
        Events per window when `stateful=False` (the current one included).
    bptt
        Longest segment trained through when `stateful=True`.
    key
        Name of the field that identifies a stream (e.g. "sensor_id"); None = one stream.
    max_keys
        Keep at most this many keys, forgetting the least recently learned one (default 100,000:
        bounded memory even when the key field is new on every record; None = all, unbounded).
    many_to_many
        Loss on every event of the segment/window that has a target, not only on the new one(s).
        None (default): the whole segment when stateful (each event is learned about
        `bptt / update_every` times, as the core learners reuse a batch), the last event of each
        window when windowed (many-to-one).
"""


class LSTMClassifier(SequenceLearner, TorchClassifier):
    __doc__ = f"""A streaming recurrent classifier (see the module docstring for the two modes).

    Parameters
    ----------{_SEQ_DOC}
    loss, optimizer, lr, batch_size, update_every, weight_decay, grad_clip, scale_inputs, lr_control, classes, device, seed, optimizer_kwargs
        As in `streamnn.TorchClassifier` (`batch_size`: windows per step, windowed mode).
        `learn_one(x, None)` advances the key's state without a label.

    Examples
    --------
    >>> model = LSTMClassifier(cell="gru", key="id", hidden_size=4, seed=0)
    >>> model.learn_one({{"id": "a", "v": 1.0}}, "up")
    >>> model.predict_proba_one({{"id": "b", "v": 1.0}})
    {{'up': 1.0}}
    >>> model.n_keys_
    1
    """

    def __init__(self, cell: str = "lstm", hidden_size: int = 32, num_layers: int = 1, dropout: float = 0.0,
                 stateful: bool = True, window: int = 16, bptt: int = 64, key=None, max_keys: int | None = MAX_KEYS,
                 many_to_many: bool | None = None, loss="cross_entropy", optimizer="adam", lr: float = 0.05,
                 batch_size: int = 32, update_every: int = 32, weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0, scale_inputs: str | None = "welford", lr_control="plateau",
                 classes: tuple | None = None, device: str = "cpu", seed: int | None = None,
                 optimizer_kwargs: dict | None = None):
        self._init_sequence(cell, hidden_size, num_layers, dropout, stateful, window, bptt, key,
                            max_keys, many_to_many)
        self.classes = classes
        self._init_common(optimizer, lr, batch_size, update_every, 0.0, loss, weight_decay, grad_clip,
                          scale_inputs, lr_control, device, seed, optimizer_kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden_size": 4, "update_every": 4, "bptt": 6}
        yield {"hidden_size": 4, "stateful": False, "window": 3, "cell": "gru"}

    def learn_one(self, x: dict, y, w: float = 1.0) -> None:
        self._learn_x(x, self._code(y), w)

    def learn_many(self, X: pd.DataFrame, y: pd.Series, w: pd.Series | None = None) -> None:
        check_lengths(X, y, w)
        self._learn_frame_seq(X, list(y), w, self._code)

    def _softmax(self, out: np.ndarray) -> np.ndarray:
        logits = out[:, : len(self.classes_)].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba_one(self, x: dict) -> dict:
        if self.module_ is None:
            return {c: 1.0 / len(self.classes_) for c in self.classes_}
        return dict(zip(self.classes_, self._softmax(self._out_one(x)[None])[0].tolist()))

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        if self.module_ is None:
            n = max(len(self.classes_), 1)
            return pd.DataFrame(np.full((len(X), len(self.classes_)), 1.0 / n), index=X.index, columns=self.classes_)
        return pd.DataFrame(self._softmax(self._out_many(X)), index=X.index, columns=self.classes_)


class LSTMRegressor(SequenceLearner, TorchRegressor):
    __doc__ = f"""A streaming recurrent regressor (see the module docstring for the two modes).

    Parameters
    ----------{_SEQ_DOC}
    loss, scale_target, optimizer, lr, batch_size, update_every, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `streamnn.TorchRegressor` (`batch_size`: windows per step, windowed mode).
        `learn_one(x, None)` advances the key's state without a target.

    Examples
    --------
    >>> model = LSTMRegressor(hidden_size=8, seed=0, lr=0.02, update_every=4, bptt=8)
    >>> for t in range(400):          # y is the input two events back
    ...     model.learn_one({{"u": float(t % 3)}}, float((t - 2) % 3) * 10.0)
    >>> [round(model.predict_one({{"u": 1.0}}) / 10.0) for _ in range(2)]   # y(400) = 2 * 10
    [2, 2]
    """

    def __init__(self, cell: str = "lstm", hidden_size: int = 32, num_layers: int = 1, dropout: float = 0.0,
                 stateful: bool = True, window: int = 16, bptt: int = 64, key=None, max_keys: int | None = MAX_KEYS,
                 many_to_many: bool | None = None, loss="mse", scale_target: bool = True, optimizer="adam",
                 lr: float = 0.05, batch_size: int = 32, update_every: int = 32, weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0, scale_inputs: str | None = "welford", lr_control="plateau",
                 device: str = "cpu", seed: int | None = None, optimizer_kwargs: dict | None = None):
        self._init_sequence(cell, hidden_size, num_layers, dropout, stateful, window, bptt, key,
                            max_keys, many_to_many)
        self.scale_target = scale_target
        self._init_common(optimizer, lr, batch_size, update_every, 0.0, loss, weight_decay, grad_clip,
                          scale_inputs, lr_control, device, seed, optimizer_kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden_size": 4, "update_every": 4, "bptt": 6}
        yield {"hidden_size": 4, "stateful": False, "window": 3, "cell": "rnn", "many_to_many": True}

    def learn_one(self, x: dict, y, w: float = 1.0) -> None:
        t = None if y is None else _finite(y)
        if y is not None and t is None:
            self.n_skipped_ += 1
            return
        self._learn_x(x, math.nan if t is None else t, w)

    def learn_many(self, X: pd.DataFrame, y: pd.Series, w: pd.Series | None = None) -> None:
        check_lengths(X, y, w)
        targets = [math.nan if v is None else _finite(v) for v in y]
        self.n_skipped_ += sum(t is None for t in targets)
        keep = [i for i, t in enumerate(targets) if t is not None]
        if len(keep) < len(targets):
            X, targets = X.iloc[keep], [targets[i] for i in keep]
            w = None if w is None else np.asarray(w, dtype=float)[keep]
        self._learn_frame_seq(X, targets, w)

    def predict_one(self, x: dict) -> float:
        if self.module_ is None:
            return float(self._prior(1)[0])
        return float(self._unscale(self._out_one(x)[0]))

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if self.module_ is None:
            return pd.Series(self._prior(len(X)), index=X.index)
        return pd.Series(self._unscale(self._out_many(X)[:, 0]), index=X.index)
