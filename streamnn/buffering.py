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

    unit = False   # True while every weight is known to be 1.0 (a learner then skips checking them)

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.X = self.y = self.w = None
        self.size = 0      # number of valid rows (<= capacity)
        self.head = 0      # next write position
        self.total = 0     # samples ever appended
        self.unit = True

    def _alloc(self, x: np.ndarray, y):
        y = np.asarray(y, dtype=np.float64)
        self.X = np.full((self.capacity, len(x)), np.nan)
        self.y = np.full((self.capacity,) + y.shape, np.nan)
        self.w = np.ones(self.capacity)
        self.unit = True

    def append(self, x: np.ndarray, y, w: float = 1.0):
        if self.X is None:
            self._alloc(x, y)
        if len(x) > self.X.shape[1]:
            self.X = _grow_cols(self.X, len(x))
        X = self.X
        h = self.head
        if len(x) == X.shape[1]:
            X[h] = x
        else:
            X[h, : len(x)] = x
            X[h, len(x):] = np.nan
        self.y[h] = y
        self.w[h] = w
        if w != 1.0:
            self.unit = False
        self.head = h + 1 if h + 1 < self.capacity else 0
        if self.size < self.capacity:
            self.size += 1
        self.total += 1

    def extend(self, X: np.ndarray, y, w: np.ndarray | None = None):
        """Append the rows of `X` (n, F) with targets `y` (n, ...) and weights `w` (n,) (None: 1.0)
        at once: the same contents, head, size and total as `append` row by row."""
        n = len(X)
        if n == 0:
            return
        y = np.asarray(y, dtype=np.float64)
        if self.X is None:
            self._alloc(X[0], y[0])
        F = X.shape[1]
        if F > self.X.shape[1]:
            self.X = _grow_cols(self.X, F)
        w = None if w is None else np.asarray(w, dtype=np.float64)
        if w is not None and self.unit and not (w == 1.0).all():
            self.unit = False
        cap, h = self.capacity, self.head
        if n > cap:   # only the last `capacity` rows survive; they start where the ring would put them
            X, y = X[n - cap:], y[n - cap:]
            w = None if w is None else w[n - cap:]
            h = (h + n - cap) % cap
        k = len(X)
        first = min(k, cap - h)
        for a, b, dst in ((0, first, h), (first, k, 0)):
            if b > a:
                rows = slice(dst, dst + b - a)
                self.X[rows, :F] = X[a:b]
                if F < self.X.shape[1]:
                    self.X[rows, F:] = np.nan
                self.y[rows] = y[a:b]
                self.w[rows] = 1.0 if w is None else w[a:b]
        self.head = (self.head + n) % cap
        self.size = min(self.size + n, cap)
        self.total += n

    def grow_targets(self, n_targets: int):
        """Widen vector targets (a new target mid-stream); old rows get NaN (no loss)."""
        if self.y is not None and self.y.ndim == 2 and self.y.shape[1] < n_targets:
            self.y = _grow_cols(self.y, n_targets)

    def last(self, n: int, copy: bool = True):
        """The `n` most recent samples, oldest first: (X, y, w); with `copy=False`, views into the
        buffer where the rows are contiguous (valid until the next write)."""
        n = min(n, self.size)
        start = (self.head - n) % self.capacity
        if start + n <= self.capacity:   # one contiguous piece
            rows = slice(start, start + n)
            if not copy:
                return self.X[rows], self.y[rows], self.w[rows]
            return self.X[rows].copy(), self.y[rows].copy(), self.w[rows].copy()
        idx = (self.head - n + np.arange(n)) % self.capacity
        return self.X.take(idx, axis=0), self.y.take(idx, axis=0), self.w.take(idx)

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
        self.unit = self.w is None or bool((self.w == 1.0).all())


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
        n, cap = len(X), self.capacity
        free = min(cap - self.size, n)                # fill the empty slots first
        if free:
            self._put(slice(self.size, self.size + free), X[:free], y[:free], w[:free])
            self.size += free
        if n > free:   # then algorithm R: row i replaces a random slot with probability cap/total
            start = self.total + free + 1
            j = self.rng.integers(0, np.arange(start, start + n - free))
            hit = (j < cap).nonzero()[0]
            if len(hit) > 1:
                last = dict(zip(j[hit].tolist(), hit.tolist()))   # a later row wins its slot
                if len(last) < len(hit):
                    hit = np.fromiter(last.values(), np.int64, len(last))
            if len(hit):
                rows = free + hit
                self._put(j[hit], X[rows], y[rows], w[rows])
        self.total += n

    def _put(self, slots, X, y, w):
        """Write rows into `slots` (a slice or distinct indices)."""
        F = X.shape[1]
        self.X[slots, :F] = X
        if F < self.X.shape[1]:
            self.X[slots, F:] = np.nan
        self.y[slots], self.w[slots] = y, w
        if self.unit and not (np.asarray(w) == 1.0).all():
            self.unit = False

    def sample(self, n: int):
        """`n` rows drawn uniformly (with replacement) from the reservoir."""
        idx = self.rng.integers(0, self.size, n)
        return self.X.take(idx, axis=0), self.y.take(idx, axis=0), self.w.take(idx)

    def state_dict(self) -> dict:
        s = super().state_dict()
        s["rng"] = self.rng.bit_generator.state
        return s

    def load_state_dict(self, s: dict):
        super().load_state_dict(s)
        self.rng.bit_generator.state = s["rng"]
