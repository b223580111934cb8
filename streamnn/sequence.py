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
import torch

from .classification import TorchClassifier
from .recurrent import CELLS, KeyStore, SeqNet, WindowBuffer, np_run, numpy_plan
from .regression import TorchRegressor, _finite

__all__ = ["LSTMClassifier", "LSTMRegressor", "SequenceLearner"]


class SequenceLearner:
    """The data path of the sequence learners; mixed in before `TorchClassifier`/`TorchRegressor`,
    whose targets, losses and classes it keeps, replacing rows by per-key sequences."""

    def _init_sequence(self, cell, hidden_size, num_layers, dropout, stateful, window, bptt, key,
                       max_keys, many_to_many):
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        self.stateful, self.window, self.bptt, self.key = stateful, window, bptt, key
        self.max_keys, self.many_to_many = max_keys, many_to_many
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r}: use one of {sorted(CELLS)}")
        if window < 1 or bptt < 1:
            raise ValueError("window and bptt must be >= 1")
        if max_keys is not None and max_keys < 1:
            raise ValueError("max_keys must be >= 1 or None")

    # -- lifecycle ---------------------------------------------------------------------------

    def _reset(self):
        super()._reset()
        state_size = (2 if self.cell == "lstm" else 1) * self.num_layers * self.hidden_size
        self.keys_ = KeyStore(self.bptt if self.stateful else self.window - 1, state_size, self.max_keys)
        self.windows_ = None if self.stateful else WindowBuffer(max(self.batch_size, self.update_every),
                                                                self.window)
        self._cache = None       # (key, row, version, state) of the last prediction
        self._version = 0        # changes whenever a state or a weight changes

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"] = None
        return state

    def _make_module(self, n_in, n_out):
        return SeqNet(n_in, n_out, self.cell, self.hidden_size, self.num_layers, self.dropout)

    def _build(self, n_in):
        super()._build(n_in)
        self._on_cpu = self._device.type == "cpu"

    def _grow_inputs(self, n_in):
        self.module_.grow_input(n_in, self.optimizer_)
        self.n_in_ = n_in
        self._plan = None

    def _extra_state(self):
        s = {**super()._extra_state(), "keys": self.keys_.state_dict()}
        if self.windows_ is not None:
            s["windows"] = self.windows_.state_dict()
        return s

    def _load_extra_state(self, s):
        super()._load_extra_state(s)
        self.keys_.load_state_dict(s["keys"])
        if self.windows_ is not None:
            self.windows_.load_state_dict(s["windows"])

    @property
    def n_keys_(self) -> int:
        """The number of keys (streams) currently held."""
        return len(self.keys_)

    def forget(self, key) -> None:
        """Drop a key's state and history (e.g. a sensor that was replaced)."""
        s = self.keys_.slots.pop(key, None)
        if s is not None:
            self.keys_.free.append(s)
            self._version += 1

    # -- inference ---------------------------------------------------------------------------

    def _split(self, x: dict):
        if self.key is None:
            return None, x
        return x.get(self.key), {f: v for f, v in x.items() if f != self.key}

    def _split_frame(self, X: pd.DataFrame):
        if self.key is None:
            return [None] * len(X), X
        keys = X[self.key].tolist() if self.key in X.columns else [None] * len(X)
        return keys, X.drop(columns=[self.key], errors="ignore")

    def _run(self, Z: np.ndarray, S: np.ndarray | None):
        """Eval-mode forward of scaled windows Z (B, T, F) from states S (B, S) -> (B, O), (B, S)."""
        if self._on_cpu:
            if self._plan is None:
                self._plan = numpy_plan(self.module_)
            return np_run(self._plan, Z, S)
        module, dev = self.module_, self._device
        was = module.training
        module.eval()
        with torch.inference_mode():
            out, S = module(torch.as_tensor(Z, device=dev), None if S is None else torch.as_tensor(S, device=dev))
        module.train(was)
        return out[:, -1].cpu().numpy(), S.cpu().numpy()

    def _outputs(self, keys, M: np.ndarray, cache: bool = False) -> np.ndarray:
        """Network outputs (B, O) for raw rows M (B, F) of `keys`, each from its key's state."""
        slots = [self.keys_.get(k) for k in keys]
        if self.stateful:
            out, S = self._run(self._scale(M)[:, None], self.keys_.states(slots))
            if cache and len(keys) == 1:
                self._cache = (keys[0], M[0].tobytes(), self._version, S[0])
            return out
        hist = self.keys_.history(slots, M.shape[1])                      # (B, window-1, F)
        out, _ = self._run(self._scale(np.concatenate([hist, M[:, None]], axis=1)), None)
        return out

    def _carry(self, key):
        """A copy of what a key carries: its state (1, S), or its window history (1, window-1, F)."""
        s = self.keys_.get(key)
        if self.stateful:
            return self.keys_.states([s])
        return self.keys_.history([s], len(self.features_))

    def _advance(self, row: np.ndarray, carry):
        """Pure: the output (O,) for raw `row` (F,) after `carry`, and the carry that follows it."""
        if self.stateful:
            out, carry = self._run(self._scale(row[None, None]), carry)
            return out[0], carry
        win = np.concatenate([carry, row[None, None]], axis=1)               # (1, window, F)
        return self._run(self._scale(win), None)[0][0], win[:, 1:]

    # -- learning ----------------------------------------------------------------------------

    def _learn_event(self, key, row: np.ndarray, target: float, w: float, state=None):
        """Record one event (target NaN = no label: the state advances, no loss)."""
        if self.module_ is None:
            if len(row) == 0:
                return
            self._build(len(row))
        elif len(row) > self.n_in_:
            self._grow_inputs(len(row))
        st = self.keys_
        st.ensure_features(len(row))
        s = st.slot(key)
        if self.stateful:
            self._append(key, s, row, target, w, state)
        else:
            hist = st.X[s, :, : len(row)]
            self.windows_.append(np.concatenate([hist, row[None]]), np.append(st.Y[s], target), w)
            st.push(s, row, target, w)
        self.n_seen_ += 1
        self._pending += 1
        self._version += 1
        if self._pending >= self.update_every:
            self._step()

    def _append(self, key, s: int, row, target, w, state):
        st = self.keys_
        if state is None:
            c = self._cache
            if c is not None and c[2] == self._version and c[0] == key and c[1] == row.tobytes():
                state = c[3]
            else:
                state = self._run(self._scale(row[None, None]), st.h[s][None])[1][0]
        keep = self.bptt // 2
        cut = self.bptt - keep
        if st.length[s] == self.bptt:            # truncate: keep the last half of the segment
            if st.new[s] > 0:                    # (only if update_every > bptt for this key)
                self._step()
            L = self.bptt
            for a in (st.X, st.Y, st.W):
                a[s, :keep] = a[s, L - keep:L]
            st.length[s] = keep
            st.h0[s] = st.hmid[s]
            if keep == cut:
                st.hmid[s] = st.h[s]
        pos = st.length[s]
        st.put(s, pos, row, target, w)
        st.length[s] = pos + 1
        st.new[s] += 1
        st.h[s] = state
        if pos + 1 == cut:
            st.hmid[s] = state

    def _learn_rows(self, keys, M: np.ndarray, targets, weights, encode):
        """learn_many: the learn_one schedule, with the state steps of each chunk between two
        optimizer steps batched over keys (wave i = the i-th event of every key in the chunk)."""
        i, n = 0, len(M)
        while i < n:
            if not self.stateful or self.module_ is None or M.shape[1] > self.n_in_:
                self._learn_event(keys[i], M[i], encode(targets[i]), weights[i])
                i += 1
                continue
            j = min(n, i + self.update_every - self._pending)
            starts, states = self._advance_chunk(keys[i:j], M[i:j])
            for r in range(i, j):
                st, u = self.keys_, self.n_updates_ + self.n_nonfinite_
                s = st.slots.get(keys[r])
                ok = np.array_equal(st.h[s], starts[r - i]) if s is not None else not starts[r - i].any()
                self._learn_event(keys[r], M[r], encode(targets[r]), weights[r], states[r - i] if ok else None)
                if self.n_updates_ + self.n_nonfinite_ != u and r < j - 1:   # a forced step: recompute
                    j = r + 1
                    break
            i = j

    def _advance_chunk(self, keys, M):
        """Start and next states (m, S) of a chunk's events, computed wave by wave."""
        Z = self._scale(M)
        starts = np.zeros((len(M), self.keys_.state_size), np.float32)
        states = np.zeros_like(starts)
        prev, waves = {}, []
        for r, k in enumerate(keys):
            w = prev.get(k, (None, -1))[1] + 1
            if w == len(waves):
                waves.append([])
            waves[w].append(r)
            prev[k] = (r, w)
        last = {}
        for rows in waves:
            for r in rows:
                k = keys[r]
                if k in last:
                    starts[r] = states[last[k]]
                else:
                    s = self.keys_.get(k)
                    if s is not None:
                        starts[r] = self.keys_.h[s]
                last[k] = r
            states[rows] = self._run(Z[rows][:, None], starts[rows])[1]
        return starts, states

    def _step(self):
        if self.stateful:
            batch = self._stateful_batch()
        else:
            batch = self._window_batch()
        self._pending = 0
        if batch is None:
            return
        X, Y, W, S0, mask, preq_mask = batch
        dev = self._device
        Z = torch.as_tensor(self._scale(X), device=dev)                        # (B, T, F)
        T = torch.as_tensor(self._prepare_targets(np.where(mask, Y, 0.0)[mask]), device=dev)
        out = self._train_out(Z, None if S0 is None else torch.as_tensor(S0, device=dev))  # (B, T, O)
        per = self._loss_per_sample(out[torch.as_tensor(mask, device=dev)], T)    # (N,)
        Wm = W[mask]
        Wt = torch.as_tensor(Wm, dtype=torch.float32, device=dev)
        loss = (per * Wt).sum() / Wt.sum().clamp_min(1e-12)
        pm = torch.as_tensor(preq_mask[mask], device=dev)
        preq_t = per.detach()[pm].mean() if bool(preq_mask.any()) else per.detach().mean()
        if self._apply_loss(loss, preq_t):
            self._plan = None
            self._version += 1

    def _train_out(self, Z, S0):
        module = self.module_
        module.train()
        if not self._stochastic:
            return module(Z, S0)[0]
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            out = module(Z, S0)[0]
            self._rng_state = torch.get_rng_state()
        return out

    def _absorb(self, X_new: np.ndarray, Y_new: np.ndarray):
        if self.scale_inputs is not None and len(X_new):
            self.scaler_.update(X_new)
        Y_new = Y_new[np.isfinite(Y_new)]
        if len(Y_new):
            self._absorb_targets(Y_new)

    def _stateful_batch(self):
        st = self.keys_
        slots = np.nonzero(st.new > 0)[0]
        if len(slots) == 0:
            return None
        L, N = st.length[slots], st.new[slots]
        st.new[slots] = 0
        T = int(L.max())
        X, Y, W = st.X[slots, :T], st.Y[slots, :T], st.W[slots, :T]          # (B, T, F), (B, T)
        pos = np.arange(T)[None]
        is_new = (pos >= (L - N)[:, None]) & (pos < L[:, None])
        self._absorb(X[is_new], Y[is_new])
        mask = (is_new if self.many_to_many is False else pos < L[:, None]) & np.isfinite(Y)
        if not mask.any():
            return None
        return X, Y, W, st.h0[slots], mask, is_new

    def _window_batch(self):
        p = self._pending
        X, Y, W = self.windows_.last(max(self.batch_size, p))                 # (B, T, F), (B, T)
        self._absorb(X[-p:, -1], Y[-p:, -1])
        mask = np.isfinite(Y)
        if not self.many_to_many:
            mask[:, :-1] = False
        preq = np.zeros_like(mask)
        preq[-p:, -1] = True
        if not mask.any():
            return None
        return X, Y, np.broadcast_to(W[:, None], Y.shape), None, mask, preq

    # -- shared river API pieces --------------------------------------------------------------

    def _learn_x(self, x: dict, target, w):
        key, x = self._split(x)
        self._learn_event(key, self.features_.row(x), target, w)

    def _learn_frame_seq(self, X: pd.DataFrame, targets, w, encode=float):
        keys, X = self._split_frame(X)
        M = self.features_.frame(X)
        weights = np.ones(len(M)) if w is None else np.asarray(w, dtype=float)
        self._learn_rows(keys, M, targets, weights, encode)

    def _out_one(self, x: dict):
        key, x = self._split(x)
        return self._outputs([key], self.features_.row(x, grow=False)[None], cache=True)[0]

    def _out_many(self, X: pd.DataFrame):
        keys, X = self._split_frame(X)
        return self._outputs(keys, self.features_.frame(X, grow=False))


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
        Keep at most this many keys, forgetting the least recently learned one (None = all).
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
                 stateful: bool = True, window: int = 16, bptt: int = 64, key=None, max_keys: int | None = None,
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
        self._learn_x(x, math.nan if y is None else self._encode(y), w)

    def learn_many(self, X: pd.DataFrame, y: pd.Series, w: pd.Series | None = None) -> None:
        self._learn_frame_seq(X, list(y), w, lambda v: math.nan if v is None else self._encode(v))

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
                 stateful: bool = True, window: int = 16, bptt: int = 64, key=None, max_keys: int | None = None,
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
        targets = [math.nan if v is None else _finite(v) for v in y]
        self.n_skipped_ += sum(t is None for t in targets)
        keep = [i for i, t in enumerate(targets) if t is not None]
        if len(keep) < len(targets):
            X, targets = X.iloc[keep], [targets[i] for i in keep]
            w = None if w is None else np.asarray(w, dtype=float)[keep]
        self._learn_frame_seq(X, targets, w)

    def predict_one(self, x: dict) -> float:
        if self.module_ is None:
            return 0.0
        return float(self._unscale(self._out_one(x)[0]))

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if self.module_ is None:
            return pd.Series(np.zeros(len(X)), index=X.index)
        return pd.Series(self._unscale(self._out_many(X)[:, 0]), index=X.index)
