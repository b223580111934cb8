"""Mini-batch buffering: a ring buffer of the latest samples and a replay reservoir.

>>> import numpy as np
>>> buf = RingBuffer(capacity=3)
>>> for i in range(5):
...     buf.append(np.array([float(i)]), float(i))
>>> buf.last(3)[0].ravel().tolist()     # the 3 most recent rows, oldest first
[2.0, 3.0, 4.0]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RingBuffer", "Reservoir"]


def _grow_cols(a: np.ndarray, width: int) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] < width:
        pad = np.full((a.shape[0], width - a.shape[1]), np.nan, dtype=a.dtype)
        return np.concatenate([a, pad], axis=1)
    return a


class RingBuffer:
    """The last `capacity` (x, y, w) samples; rows are raw feature vectors (NaN = missing).

    `y` may be a scalar (class index, regression target) or a vector (several targets).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.X = self.y = self.w = None
        self.size = 0      # number of valid rows (<= capacity)
        self.head = 0      # next write position
        self.total = 0     # samples ever appended

    def _alloc(self, x: np.ndarray, y):
        y = np.asarray(y, dtype=np.float64)
        self.X = np.full((self.capacity, len(x)), np.nan)
        self.y = np.full((self.capacity,) + y.shape, np.nan)
        self.w = np.ones(self.capacity)

    def append(self, x: np.ndarray, y, w: float = 1.0):
        if self.X is None:
            self._alloc(x, y)
        if len(x) > self.X.shape[1]:
            self.X = _grow_cols(self.X, len(x))
        X = self.X
        h = self.head
        X[h, : len(x)] = x
        if len(x) < X.shape[1]:
            X[h, len(x):] = np.nan
        self.y[h] = y
        self.w[h] = w
        self.head = (h + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.total += 1

    def extend(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
        for i in range(len(X)):
            self.append(X[i], y[i], 1.0 if w is None else w[i])

    def grow_targets(self, n_targets: int):
        """Widen vector targets (a new target mid-stream); old rows get NaN (no loss)."""
        if self.y is not None and self.y.ndim == 2 and self.y.shape[1] < n_targets:
            self.y = _grow_cols(self.y, n_targets)

    def last(self, n: int):
        """The `n` most recent samples, oldest first: (X, y, w)."""
        n = min(n, self.size)
        idx = (self.head - n + np.arange(n)) % self.capacity
        return self.X[idx], self.y[idx], self.w[idx]

    def state_dict(self) -> dict:
        s = {"capacity": self.capacity, "size": self.size, "head": self.head, "total": self.total}
        if self.X is not None:
            s.update(X=torch.from_numpy(self.X.copy()), y=torch.from_numpy(self.y.copy()),
                     w=torch.from_numpy(self.w.copy()))
        return s

    def load_state_dict(self, s: dict):
        self.capacity, self.size, self.head, self.total = s["capacity"], s["size"], s["head"], s["total"]
        if "X" in s:
            self.X, self.y, self.w = (s[k].numpy().copy() for k in ("X", "y", "w"))
        else:
            self.X = self.y = self.w = None


class Reservoir(RingBuffer):
    """Uniform reservoir sample (Vitter's algorithm R) of everything offered to it, for replay."""

    def __init__(self, capacity: int, seed=None):
        super().__init__(capacity)
        self.rng = np.random.default_rng(seed)

    def offer(self, X: np.ndarray, y: np.ndarray, w: np.ndarray):
        if len(X) == 0:
            return
        if self.X is None:
            self._alloc(X[0], y[0])
        if X.shape[1] > self.X.shape[1]:
            self.X = _grow_cols(self.X, X.shape[1])
        free = min(self.capacity - self.size, len(X))        # fill the empty slots first
        slots = list(range(self.size, self.size + free))
        self.size += free
        rest = len(X) - free
        if rest > 0:   # then algorithm R: row i replaces a random slot with probability cap/total
            totals = self.total + free + np.arange(1, rest + 1)
            j = self.rng.integers(0, totals)
            slots += [int(v) if v < self.capacity else -1 for v in j]
        self.total += len(X)
        F = X.shape[1]
        for i, slot in enumerate(slots):
            if slot >= 0:
                self.X[slot, :F] = X[i]
                self.X[slot, F:] = np.nan
                self.y[slot], self.w[slot] = y[i], w[i]

    def sample(self, n: int):
        """`n` rows drawn uniformly (with replacement) from the reservoir."""
        idx = self.rng.integers(0, self.size, n)
        return self.X[idx], self.y[idx], self.w[idx]

    def state_dict(self) -> dict:
        s = super().state_dict()
        s["rng"] = self.rng.bit_generator.state
        return s

    def load_state_dict(self, s: dict):
        super().load_state_dict(s)
        self.rng.bit_generator.state = s["rng"]
