"""The per-key store of the sequence learners: hidden states, BPTT segments and window histories
of every key in one array each, so that a frame's keys are gathered, stepped and scattered at once.

A recurrent state is kept per key as one flat float32 vector of `state_size` numbers (LSTM: h and
c of every layer; GRU/RNN: h of every layer), so that the states of many keys stack into a (B, S)
matrix and run through one batched cell step.

>>> import numpy as np
>>> st = KeyStore(seq_len=4, state_size=2)
>>> slots = st.slots_of(["a", "b", "a"])              # created on first sight, in stream order
>>> slots.tolist(), len(st)
([0, 1, 0], 2)
>>> st.gather(np.array([1, -1])).shape                # -1: an unknown key, a zero state
(2, 2)
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

__all__ = ["KeyStore", "WindowBuffer", "MAX_KEYS", "remember"]

# Keys kept by default wherever state is kept per key (sequence learners, a keyed detector's
# windows, the runtime's lags): a bound on memory and checkpoint size. Without one, a key field that
# is new on every record (an event id) grows them until the consumer is killed. Sequence learners:
# about bptt x (n_features + 2) x 8 bytes plus three float32 states a key (0.4-1 GB at 100,000 keys
# with the default sizes); windows and lags: a few hundred bytes a key.
MAX_KEYS = 100_000


def remember(d: dict, key, value, limit: int | None = MAX_KEYS) -> int:
    """`d[key] = value` as the most recently used key; past `limit` keys the least recently used
    one is forgotten. Returns how many keys were forgotten (0 or 1).

    >>> d = {}
    >>> [remember(d, k, k * 10, limit=2) for k in (1, 2, 1, 3)], d
    ([0, 0, 0, 1], {1: 10, 3: 30})
    """
    if key in d:
        del d[key]
    d[key] = value
    if limit is not None and len(d) > limit:
        del d[next(iter(d))]
        return 1
    return 0


def _grow_last(a: np.ndarray, width: int) -> np.ndarray:
    if a.shape[-1] >= width:
        return a
    pad = np.full(a.shape[:-1] + (width - a.shape[-1],), np.nan)
    return np.concatenate([a, pad], axis=-1)


class KeyStore:
    """Per-key slots: recent raw rows `X` (cap, seq_len, F), targets `Y`, weights `W`, their
    count `length`, and (stateful mode) the current state `h`, the state `h0` at the start of the
    BPTT segment, `hmid` where the segment is cut on truncation, and `new`, the events not yet
    trained on. Keys are kept in least-recently-learned order; past `max_keys` the oldest is
    dropped (its untrained events are counted in `n_evicted_events`).
    """

    def __init__(self, seq_len: int, state_size: int, max_keys: int | None = None):
        self.seq_len, self.state_size, self.max_keys = seq_len, state_size, max_keys
        self.slots: OrderedDict = OrderedDict()
        self.free: list = []
        self.n_evicted_keys = self.n_evicted_events = 0
        self._alloc(0, 0)

    def _alloc(self, cap: int, n_features: int):
        self.cap = cap
        self.X = np.full((cap, self.seq_len, n_features), np.nan)
        self.Y = np.full((cap, self.seq_len), np.nan)
        self.W = np.ones((cap, self.seq_len))
        self.length = np.zeros(cap, np.int64)
        self.new = np.zeros(cap, np.int64)
        self.h, self.h0, self.hmid = (np.zeros((cap, self.state_size), np.float32) for _ in range(3))

    def __len__(self) -> int:
        return len(self.slots)

    def get(self, key):
        """The slot of `key` or None; does not touch the recency order (for predictions)."""
        return self.slots.get(key)

    def slot(self, key) -> int:
        """The slot of `key`, created if new, marked as most recently used."""
        s = self.slots.get(key)
        if s is not None:
            self.slots.move_to_end(key)
            return s
        if self.max_keys is not None and len(self.slots) >= self.max_keys:
            _, old = self.slots.popitem(last=False)
            self.n_evicted_keys += 1
            self.n_evicted_events += int(self.new[old])
            self.free.append(old)
        if self.free:
            s = self.free.pop()
        else:
            s = len(self.slots)
            if s >= self.cap:
                self._grow(max(1, 2 * self.cap))
        self._clear(s)
        self.slots[key] = s
        return s

    def _grow(self, cap: int):
        arrays = {k: getattr(self, k) for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid")}
        self._alloc(cap, self.X.shape[-1])
        for k, a in arrays.items():
            getattr(self, k)[: len(a)] = a

    def _clear(self, s: int):
        self.X[s], self.Y[s], self.W[s] = np.nan, np.nan, 1.0
        self.length[s] = self.new[s] = 0
        self.h[s] = self.h0[s] = self.hmid[s] = 0.0

    def ensure_features(self, n: int):
        if n > self.X.shape[-1]:
            self.X = _grow_last(self.X, n)

    def lookup(self, keys) -> np.ndarray:
        """The slots of `keys` (-1 = unknown), without touching the recency order (predictions)."""
        get = self.slots.get
        return np.fromiter((-1 if (s := get(k)) is None else s for k in keys), np.int64, len(keys))

    def slots_of(self, keys) -> np.ndarray:
        """The slots of `keys`, each created if new and marked as most recently used, in order."""
        slot = self.slot
        return np.fromiter((slot(k) for k in keys), np.int64, len(keys))

    def gather(self, slots: np.ndarray) -> np.ndarray:
        """Stateful mode: the current states of `slots` (-1 = zeros) -> (B, S), one gather."""
        out = self.h[np.maximum(slots, 0)] if len(self.h) else np.zeros((len(slots), self.state_size), np.float32)
        out[slots < 0] = 0.0
        return out

    def append(self, S: np.ndarray, M: np.ndarray, Y, W, states: np.ndarray):
        """Stateful mode: one event for each of the distinct slots `S` (m,): raw rows M (m, F),
        targets Y (m,), weights W (m,) and the states after them (m, S), in one scatter.

        A full segment (`seq_len` events) is first cut (`_cut`).
        """
        cut = self.seq_len - self.seq_len // 2
        if len(S) == 1:                          # one key: plain indexing costs a fraction
            s = int(S[0])
            if self.length[s] == self.seq_len:
                self._cut(s)
            pos = int(self.length[s])
            self.put(s, pos, M[0], Y[0], W[0])
            self.length[s] = pos + 1
            self.new[s] += 1
            self.h[s] = states[0]
            if pos + 1 == cut:
                self.hmid[s] = states[0]
            return
        full = S[self.length[S] == self.seq_len]
        if len(full):
            self._cut(full)
        pos = self.length[S]
        F = M.shape[1]
        self.X[S, pos, :F] = M
        if F < self.X.shape[-1]:
            self.X[S, pos, F:] = np.nan
        self.Y[S, pos], self.W[S, pos] = Y, W
        self.length[S] = pos + 1
        self.new[S] += 1
        self.h[S] = states
        mid = pos + 1 == cut
        if mid.any():
            self.hmid[S[mid]] = states[mid]

    def _cut(self, s):
        """Cut the full segments of slot(s) `s`: keep their last half, restart from the state stored
        at the cut (`hmid`), so that gradients reach `seq_len // 2` to `seq_len` events back."""
        L = self.seq_len
        keep = L // 2
        for a in (self.X, self.Y, self.W):
            a[s, :keep] = a[s, L - keep:L]
        self.length[s] = keep
        self.h0[s] = self.hmid[s]
        if keep == L - keep:
            self.hmid[s] = self.h[s]

    def put(self, s: int, pos: int, row: np.ndarray, y: float, w: float):
        self.X[s, pos, : len(row)] = row
        self.X[s, pos, len(row):] = np.nan
        self.Y[s, pos], self.W[s, pos] = y, w

    def push(self, s: int, row: np.ndarray, y: float, w: float):
        """Windowed mode: shift the key's history left by one and put the row last."""
        if self.seq_len == 0:
            return
        for a in (self.X, self.Y, self.W):
            a[s, :-1] = a[s, 1:]
        self.put(s, self.seq_len - 1, row, y, w)
        self.length[s] = min(self.length[s] + 1, self.seq_len)

    def history(self, slots: np.ndarray, n_features: int) -> np.ndarray:
        """Windowed mode: the histories of `slots` (-1 = unknown key) -> (B, seq_len, F), one gather."""
        out = np.full((len(slots), self.seq_len, n_features), np.nan)
        F = min(n_features, self.X.shape[-1])
        known = slots >= 0
        if known.any():
            out[known, :, :F] = self.X[slots[known], :, :F]
        return out

    def state_dict(self) -> dict:
        """Plain types and tensors; slot numbers are kept, so that batches keep their order."""
        plain = lambda k: k.item() if isinstance(k, np.generic) else k  # noqa: E731
        s = {k: torch.from_numpy(getattr(self, k).copy()) for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid")}
        s.update(keys=[plain(k) for k in self.slots], slots=list(self.slots.values()), free=list(self.free),
                 evicted=[self.n_evicted_keys, self.n_evicted_events])
        return s

    def load_state_dict(self, s: dict):
        for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid"):
            setattr(self, k, s[k].numpy().copy())
        self.cap = len(self.length)
        self.slots = OrderedDict(zip(s["keys"], s["slots"]))
        self.free = list(s["free"])
        self.n_evicted_keys, self.n_evicted_events = s["evicted"]


class WindowBuffer:
    """The last `capacity` training windows: X (cap, T, F) raw rows, Y (cap, T) targets, w (cap,)."""

    def __init__(self, capacity: int, length: int):
        self.capacity, self.length = int(capacity), int(length)
        self.X = np.full((self.capacity, self.length, 0), np.nan)
        self.Y = np.full((self.capacity, self.length), np.nan)
        self.w = np.ones(self.capacity)
        self.size = self.head = 0

    def append(self, X: np.ndarray, Y: np.ndarray, w: float):
        self.X = _grow_last(self.X, X.shape[-1])
        h = self.head
        self.X[h, :, : X.shape[-1]] = X
        self.X[h, :, X.shape[-1]:] = np.nan
        self.Y[h], self.w[h] = Y, w
        self.head = (h + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def last(self, n: int):
        """The `n` most recent windows, oldest first: (X, Y, w)."""
        n = min(n, self.size)
        idx = (self.head - n + np.arange(n)) % self.capacity
        return self.X[idx], self.Y[idx], self.w[idx]

    def state_dict(self) -> dict:
        return {"X": torch.from_numpy(self.X.copy()), "Y": torch.from_numpy(self.Y.copy()),
                "w": torch.from_numpy(self.w.copy()), "size": self.size, "head": self.head}

    def load_state_dict(self, s: dict):
        self.X, self.Y, self.w = (s[k].numpy().copy() for k in ("X", "Y", "w"))
        self.size, self.head = s["size"], s["head"]
