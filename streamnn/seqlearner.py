"""`SequenceLearner`: the data path of the sequence learners (`streamnn.sequence`), per key:
prediction from the key's state (or window), learning with truncated BPTT (stateful) or stacked
windows, and the optimizer step. The frame path of `learn_many` is `streamnn.seqframes`, the
per-key store `streamnn.keystore`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import backends
from .features import series_key
from .keystore import MAX_KEYS, KeyStore, WindowBuffer
from .recurrent import CELLS, SeqNet, np_run, numpy_plan
from .schedule import check_weight, checked_weights
from .seqframes import FrameLearning

__all__ = ["SequenceLearner", "MAX_KEYS"]



class SequenceLearner(FrameLearning):
    """The data path of the sequence learners; mixed in before `TorchClassifier`/`TorchRegressor`,
    whose targets, losses and classes it keeps, replacing rows by per-key sequences."""

    # Parameters a runtime checkpoint may differ in: `max_keys` bounds memory, not what was
    # learned (it was unbounded, None, before it defaulted to MAX_KEYS; a TOML config cannot say
    # None, so such checkpoints resume under the config's bound)
    RESUME_FREE = ("max_keys",)

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

    def _select_backend(self):
        return backends.select(self.module_, self.optimizer_, None, self._device, self.grad_clip,
                               refuse="recurrent training (numpy runs the cells for prediction only)")

    def _grow_inputs(self, n_in):
        self.module_.grow_input(n_in, self.optimizer_)
        self.n_in_ = n_in
        self._invalidate()

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
        return series_key(x.get(self.key)), {f: v for f, v in x.items() if f != self.key}

    def _split_frame(self, X: pd.DataFrame):
        if self.key is None:
            return [None] * len(X), X
        keys = list(map(series_key, X[self.key].tolist())) if self.key in X.columns else [None] * len(X)
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
            both = torch.cat([out[:, -1], S], dim=1).cpu().numpy()   # one copy to the host, one sync
        module.train(was)
        return both[:, : out.shape[-1]], both[:, out.shape[-1]:]

    def _outputs(self, keys, M: np.ndarray, cache: bool = False) -> np.ndarray:
        """Network outputs (B, O) for raw rows M (B, F) of `keys`, each from its key's state."""
        slots = self.keys_.lookup(keys)
        if self.stateful:
            out, S = self._run(self._scale(M)[:, None], self.keys_.gather(slots))
            if cache and len(keys) == 1:
                self._cache = (keys[0], M[0].tobytes(), self._version, S[0])
            return out
        hist = self.keys_.history(slots, M.shape[1])                      # (B, window-1, F)
        out, _ = self._run(self._scale(np.concatenate([hist, M[:, None]], axis=1)), None)
        return out

    def _carry(self, key):
        """A copy of what a key carries: its state (1, S), or its window history (1, window-1, F)."""
        s = self.keys_.lookup([key])
        if self.stateful:
            return self.keys_.gather(s)
        return self.keys_.history(s, len(self.features_))

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
        if not self._ready_for(row):
            self._learn_unbuilt(target)
            return
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
        if st.length[s] == self.bptt and st.new[s] > 0:   # the segment is cut: train its events first
            self._step()                                   # (only if update_every > bptt // 2)
        st.append(np.array([s]), row[None], [target], [w], state[None])

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
        check_weight(w)
        key, x = self._split(x)
        self._learn_event(key, self.features_.row(x), target, w)

    def _learn_frame_seq(self, X: pd.DataFrame, targets, w, encode=float):
        weights = np.ones(len(X)) if w is None else checked_weights(w)   # before anything is learned
        keys, X = self._split_frame(X)
        M = self.features_.frame(X)
        self._learn_rows(keys, M, targets, weights, encode)

    def _out_one(self, x: dict):
        key, x = self._split(x)
        return self._outputs([key], self.features_.row(x, grow=False)[None], cache=True)[0]

    def _out_many(self, X: pd.DataFrame):
        keys, X = self._split_frame(X)
        return self._outputs(keys, self.features_.frame(X, grow=False))
