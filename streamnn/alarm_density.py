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

__all__ = ["RecordDensity", "kth_smallest"]

_PIECE = 128        # rows judged at once: (rows, memory + rows) distances each, so short pieces cost
                    # less than a whole frame against itself
_BLOCK = 128        # values per block in `kth_smallest`
_FLOOR = 1e-4        # squared distances below this (in standard deviations) count as this: the log
                     # of a duplicate row would be an outlier far below the rest and widen the yardstick


def kth_smallest(D: np.ndarray, k: int) -> np.ndarray:
    """The `k`-th smallest value of each row of `D` (N, M), exactly as `np.partition` gives it,
    about three times as fast on rows of a thousand values; a C-contiguous `D` whose width is a
    multiple of `_BLOCK` is reordered in place (no copy).

    numpy's selection slows down per value on long rows (here ~10 ns a value at 1,000 against ~3 ns
    at 128), so the row is cut into blocks of `_BLOCK` values (the last one padded with inf): the
    `k` smallest of the row are among the `k` smallest of its blocks, and those are few.

    >>> D = np.random.default_rng(0).random((5, 1000))
    >>> bool((kth_smallest(D, 20) == np.partition(D, 19, axis=1)[:, 19]).all())
    True
    """
    N, M = D.shape
    if M <= 2 * _BLOCK or k > _BLOCK:
        return np.partition(D, k - 1, axis=1)[:, k - 1]
    nb = -(-M // _BLOCK)
    if M % _BLOCK == 0 and D.flags.c_contiguous:   # blocks in place (D is reordered)
        P = D.reshape(N, nb, _BLOCK)
    else:
        P = np.empty((N, nb, _BLOCK))
        flat = P.reshape(N, nb * _BLOCK)
        flat[:, :M], flat[:, M:] = D, np.inf
    P.partition(k - 1, axis=2)
    C = P[:, :, :k].reshape(N, nb * k)
    C.partition(k - 1, axis=1)
    return C[:, k - 1]


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
        self._memo = None                        # ((n, pos, rows' bytes), signals, finite rows) of
                                                 # the last keep=False call

    def signals(self, v: np.ndarray) -> tuple:
        """(log distance to the `k`-th nearest stored record,) of the next record `v` (C,); pure."""
        return (float(self.scores(np.asarray(v, np.float64)[None, :], keep=False)[0, 0]),)

    def update(self, v: np.ndarray) -> None:
        """Add the record `v` (C,) (one with a value that is not finite is skipped)."""
        self.scores(np.asarray(v, np.float64)[None, :], keep=True)

    def scores(self, V: np.ndarray, keep: bool = True) -> np.ndarray:
        """`signals` of each row of `V` (N, C) in order, each row added after it is scored (unless
        `keep=False`: the state is left as it was): (N, 1). A `keep=False` call then a `keep=True`
        call of the same rows from the same state (score_many then learn_many of one frame)
        compute the distances once."""
        V = np.asarray(V, np.float64)
        N, C = V.shape
        if C != self.C:                           # a new width: the memory starts again
            if not keep:
                return RecordDensity(self.k, self.memory).scores(V)
            self._clear(C)
        key = (self.n, self.pos, V.tobytes())
        memo = self._memo
        if memo is not None and memo[0] == key:
            out = memo[1]
            if keep:
                self._memo = None
                self._add(V[memo[2]])
            return out
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(V * V).all(axis=1)   # a value that is not finite (or whose square
        rows = np.flatnonzero(ok)                 # is not): NaN, not stored
        out = np.full((N, 1), np.nan)
        if len(rows) == N and N == 1:
            out[0, 0] = self._one(V[0])
            if keep:
                self._add(V)
        else:
            twin = self if keep else self._copy()
            step = min(self.memory, _PIECE)
            for a in range(0, len(rows), step):   # pieces of rows: each sees the ones before in memory
                part = V[rows[a:a + step]]
                out[rows[a:a + step], 0] = twin._many(part)
                twin._add(part)
        self._memo = None if keep else (key, out, rows)
        return out

    def _weights(self, n, s1, s2, ref):
        """1 / the variance of each feature from the moments (n, s1, s2 about `ref`); 0 where it
        is not finite."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mu = s1 / n
            w = 1.0 / np.maximum(s2 / n - mu * mu, 1e-18 * (1.0 + (mu + ref) ** 2))
        return np.where(np.isfinite(w), w, 0.0), mu + ref

    def _one(self, v: np.ndarray) -> float:
        """The signal of one finite row against the stored rows."""
        size = self.size
        if size < self.k:                        # (then also n >= k > 0 below)
            return math.nan
        w, _ = self._weights(self.n, self.s1, self.s2, self.ref)
        d = ((self.buf[:size] - v) ** 2) @ w
        dk = float(kth_smallest(d[None], self.k)[0])
        return 0.5 * math.log(dk if dk > _FLOOR else _FLOOR)

    def _many(self, V: np.ndarray) -> np.ndarray:
        """The signals (N,) of finite rows `V`, N <= memory, each against the stored rows not yet
        overwritten by the rows before it and the rows before it; pure."""
        N, M, k, size = len(V), self.memory, self.k, self.size
        ref = self.ref if self.n else V[0]
        R = V - ref          # the moments before each row, from sequential sums as `_add` adds them
        s1 = np.cumsum(np.vstack([self.s1, R]), axis=0)[:N]
        s2 = np.cumsum(np.vstack([self.s2, R * R]), axis=0)[:N]
        w, mean = self._weights((self.n + np.arange(N, dtype=np.float64))[:, None], s1, s2, ref)
        # sum_c w (a - v)^2 = w . (a*a) - 2 (w v) . a + (w v) . v: one matrix product
        # [w, -2 w v, (w v) . v] @ [a*a, a, 1] over the stored rows (oldest first, so that the rows
        # before row j overwrote the first of them) and the frame's rows, around a common centre
        c = mean[0] if self.n else V[0]
        order = (np.arange(size) + (self.pos - size)) % M
        P = np.concatenate([self.buf[order], V]) - c                            # (size + N, C)
        X = P[size:]
        WX = w * X
        A = np.concatenate([w, -2.0 * WX, (WX * X).sum(axis=1)[:, None]], axis=1)   # (N, 2C + 1)
        Q = np.concatenate([P * P, P, np.ones((size + N, 1))], axis=1)
        pad = -(size + N) % _BLOCK if size + N > 2 * _BLOCK else 0    # whole blocks for kth_smallest
        if pad:
            Q = np.concatenate([Q, np.zeros((pad, Q.shape[1]))])
        D = A @ Q.T                                                               # (N, size + N + pad)
        D[:, size + N:] = np.inf
        D[:, size:size + N][np.triu(np.ones((N, N), bool))] = np.inf    # the frame's rows from this one on
        g = max(0, size + N - M)                 # stored rows (the oldest) that the frame overwrites
        if g:                                    # row j: those the rows before it overwrote
            D[:, :g][np.arange(g)[None, :] < np.arange(N)[:, None] - (M - size)] = np.inf
        seen = np.minimum(size + np.arange(N), M)
        if size + N < k:
            return np.full(N, np.nan)
        dk = kth_smallest(D, k)
        return np.where(seen >= k, 0.5 * np.log(np.maximum(dk, _FLOOR)), np.nan)

    def _add(self, V: np.ndarray) -> None:
        """Add finite rows `V` (N, C) to the moments and the memory."""
        N = len(V)
        if not N:
            return
        if not self.n:
            self.ref = V[0].copy()
        R = V - self.ref
        if N == 1:
            self.s1, self.s2 = self.s1 + R[0], self.s2 + R[0] * R[0]
        else:
            self.s1 = np.cumsum(np.vstack([self.s1, R]), axis=0)[-1]
            self.s2 = np.cumsum(np.vstack([self.s2, R * R]), axis=0)[-1]
        self.n += N
        M = self.memory
        take = V[-M:]
        self.buf[(self.pos + N - len(take) + np.arange(len(take))) % M] = take
        self.pos = (self.pos + N) % M
        self.size = min(M, self.size + N)

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
