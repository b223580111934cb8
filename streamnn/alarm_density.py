"""Density evidence for records: how far is this event from its nearest recent neighbours?

A model's reconstruction error says how well an event fits what the network learned; on a low
dimensional stream (two features: a network reconstructs any point of the plane) or on a rare
class inside the cloud of normal events, it says little. The distance of the event to its `k`-th
nearest neighbour among the last `memory` events (each feature weighed by the inverse of its
running variance: standardised features) says how crowded its neighbourhood is: large in a region the stream
rarely visits (a kNN outlier score, as in the distance-based detectors of the ODDS benchmarks).

`RecordDensity` gives that distance (its log) as one raw signal per event for
`streamnn.alarms.Likelihood`, which judges it by its own short-against-long tail and fuses it with
the model's error by Fisher's method. NaN (no evidence) while fewer than `k` events are stored, for
a row with a value that is not finite (not stored either), and when the number of features
changes (the memory starts again).

Everything is causal: each event is judged against past events only (`signals` is pure), then
added (`update`). `scores` does the same for a frame of rows at once, with the same arithmetic
(a loop of `signals` then `update` gives the same up to the rounding of a matrix product).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d = RecordDensity()
>>> for row in rng.normal(size=(500, 2)):
...     d.update(row)
>>> inside, = d.signals(np.array([0.1, -0.2]))
>>> far, = d.signals(np.array([4.0, 4.0]))
>>> far > inside + 1.0
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["RecordDensity"]

_FLOOR = 1e-4        # squared distances below this (in standard deviations) count as this: the log
                     # of a duplicate row would be an outlier far below the rest and widen the yardstick


class RecordDensity:
    """Log distance of each record to its `k`-th nearest neighbour among the last `memory`
    records (see the module docstring)."""

    width = 1        # signals per event

    def __init__(self, k: int = 20, memory: int = 1000):
        if not 1 <= k < memory:
            raise ValueError(f"k={k}, memory={memory}: need 1 <= k < memory")
        self.k, self.memory = int(k), int(memory)
        self._clear(0)

    def _clear(self, C: int):
        self.C = C
        self.buf = np.empty((self.memory, C))    # the raw rows stored, a ring
        self.size = 0                            # rows stored (at most memory)
        self.pos = 0                             # the next slot written
        self.n = 0                               # rows summed into the running moments
        self.ref = np.zeros(C)                   # the first row: moments are taken about it
        self.s1 = np.zeros(C)                    # sum and sum of squares of the rows less `ref`
        self.s2 = np.zeros(C)
        self._memo = None                        # ((n, pos, rows' bytes), signals) of the last call

    def signals(self, v: np.ndarray) -> tuple:
        """(log distance to the `k`-th nearest stored record,) of the next record `v` (C,); pure."""
        return (float(self.scores(np.asarray(v, np.float64)[None, :], keep=False)[0, 0]),)

    def update(self, v: np.ndarray) -> None:
        """Add the record `v` (C,) (one with a value that is not finite is skipped)."""
        self.scores(np.asarray(v, np.float64)[None, :], keep=True)

    def scores(self, V: np.ndarray, keep: bool = True) -> np.ndarray:
        """`signals` of each row of `V` (N, C) in order, each row added after it is scored (unless
        `keep=False`: the state is left as it was): (N, 1)."""
        V = np.asarray(V, np.float64)
        N, C = V.shape
        out = np.full((N, 1), np.nan)
        if not N:
            return out
        if C != self.C:                           # a new width: the memory starts again
            if not keep:
                return RecordDensity(self.k, self.memory).scores(V)
            self._clear(C)
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(V * V).all(axis=1)
        if not ok.all() or N > self.memory:       # rows with a value that is not finite (or whose
            twin = self if keep else self._copy()  # square is not): NaN, not stored; long frames
            rows = np.flatnonzero(ok)              # in pieces of at most `memory` rows
            for a in range(0, len(rows), self.memory):
                part = rows[a:a + self.memory]
                out[part] = twin._scores(V[part])
            return out
        return self._scores(V, keep)

    def _scores(self, V: np.ndarray, keep: bool = True) -> np.ndarray:
        """`scores` of finite rows, at most `memory` of them (a `keep=False` call then a `keep=True`
        call of the same rows from the same state compute them once)."""
        N, M, k = len(V), self.memory, self.k
        if N == 1:
            return self._score_one(V[0], keep)
        # the variances before each row, from sequential sums (as a loop of `update` adds them);
        # squared distances weigh each feature by 1 / its variance (standardised features)
        ref = self.ref if self.n else V[0]
        R = V - ref
        s1 = np.cumsum(np.vstack([self.s1, R]), axis=0)
        s2 = np.cumsum(np.vstack([self.s2, R * R]), axis=0)
        # row j goes to slot (pos + j) % M; it sees the stored rows not yet overwritten by the
        # rows before it, and the rows before it
        slot = (self.pos + np.arange(N)) % M
        key = (self.n, self.pos, V.tobytes())
        memo = self._memo
        if memo is not None and memo[0] == key:
            out = memo[1]
        else:
            n = (self.n + np.arange(N, dtype=np.float64))[:, None]
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                mu = s1[:N] / n
                w = 1.0 / np.maximum(s2[:N] / n - mu * mu, 1e-18 * (1.0 + (mu + ref) ** 2))
            w = np.where(np.isfinite(w), w, 0.0)                   # (N, C)
            # sum_c w (a - v)^2 = (a*a) @ w - 2 a @ (w v) + (w v) . v, around a common centre
            c = mu[0] + ref if self.n else V[0]
            B, X = self.buf[:self.size] - c, V - c
            WX = w * X
            q = (WX * X).sum(axis=1)
            D = np.empty((N, self.size + N))
            D[:, :self.size] = (w @ (B * B).T) - 2.0 * (WX @ B.T) + q[:, None]
            D[:, self.size:] = (w @ (X * X).T) - 2.0 * (WX @ X.T) + q[:, None]
            if self.size:                       # stored rows overwritten by the rows before
                j, i = np.tril_indices(N, -1)
                hit = slot[i] < self.size
                D[j[hit], slot[i][hit]] = np.inf
            D[:, self.size:][np.triu_indices(N)] = np.inf            # only the rows before
            seen = np.minimum(self.size + np.arange(N), M)
            out = np.full((N, 1), np.nan)
            if D.shape[1] >= k:
                dk = np.partition(D, k - 1, axis=1)[:, k - 1]
                out[:, 0] = np.where(seen >= k, 0.5 * np.log(np.maximum(dk, _FLOOR)), np.nan)
            self._memo = (key, out)
        if not keep:
            return out
        self._memo = None
        self.s1, self.s2, self.n, self.ref = s1[N], s2[N], self.n + N, ref
        self.buf[slot] = V
        self.pos = int((self.pos + N) % M)
        self.size = min(M, self.size + N)
        return out

    def _score_one(self, v: np.ndarray, keep: bool) -> np.ndarray:
        """`_scores` of one row: the same arithmetic without the frame's bookkeeping."""
        memo, key = self._memo, (self.n, self.pos, v.tobytes())
        if memo is not None and memo[0] == key:
            out = memo[1]
        else:
            out = np.full((1, 1), np.nan)
            size = self.size
            if size >= self.k:                   # (then n >= k: no division by zero)
                mu = self.s1 / self.n
                w = 1.0 / np.maximum(self.s2 / self.n - mu * mu, 1e-18 * (1.0 + (mu + self.ref) ** 2))
                d = ((self.buf[:size] - v) ** 2) @ np.where(w < np.inf, w, 0.0)
                dk = float(np.partition(d, self.k - 1)[self.k - 1])
                out[0, 0] = 0.5 * math.log(dk if dk > _FLOOR else _FLOOR)
            self._memo = (key, out)
        if keep:
            self._memo = None
            if not self.n:
                self.ref = v.copy()
            r = v - self.ref
            self.s1, self.s2, self.n = self.s1 + r, self.s2 + r * r, self.n + 1
            self.buf[self.pos] = v
            self.pos = (self.pos + 1) % self.memory
            self.size = min(self.memory, self.size + 1)
        return out

    def _copy(self) -> "RecordDensity":
        twin = RecordDensity.__new__(RecordDensity)
        twin.__dict__.update(self.__dict__)
        twin.buf, twin.s1, twin.s2, twin.ref = self.buf.copy(), self.s1.copy(), self.s2.copy(), self.ref.copy()
        return twin

    def state_dict(self) -> dict:
        order = (np.arange(self.size) + (self.pos - self.size)) % self.memory   # oldest first
        return {"k": self.k, "memory": self.memory, "n": self.n, "rows": torch.from_numpy(self.buf[order].copy()),
                "s1": torch.from_numpy(self.s1.copy()), "s2": torch.from_numpy(self.s2.copy()),
                "ref": torch.from_numpy(self.ref.copy())}

    def load_state_dict(self, s: dict):
        self.k, self.memory = int(s["k"]), int(s["memory"])
        rows = s["rows"].numpy()
        self._clear(int(s["s1"].shape[0]))
        self.buf[:len(rows)] = rows
        self.size, self.pos = len(rows), len(rows) % self.memory
        self.n, self.s1, self.s2 = int(s["n"]), s["s1"].numpy().copy(), s["s2"].numpy().copy()
        self.ref = s["ref"].numpy().copy()

    def __getstate__(self):            # the memo is a cache: scoring leaves the pickled state as it was
        return {**self.__dict__, "_memo": None}

    def __repr__(self):
        return f"RecordDensity(k={self.k}, memory={self.memory})"
