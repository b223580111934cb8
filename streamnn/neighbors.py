"""A nearest-neighbour expert next to a classifier's network, mixed in by exponentiated gradient.

A network trained online learns a non-linear boundary slowly (river's Bananas, two features: ~0.88
for the network against 0.89 for a k-nearest-neighbour vote), while the vote is weak where the
network is strong (many features, a smooth boundary). Their mixture beat both on river's Bananas
(0.894 against 0.884 and 0.891), matched the network on Phishing and stayed within 0.002 of it on
ImageSegments (mean of 10 seeds), so `NeighbourExpert` keeps the last `memory` rows the network saw (scaled as it
saw them) with their classes, votes with the `k` nearest, and mixes its class probabilities with the
network's: p = w_net * p_net + w_vote * p_vote. The two weights start at 1/2 and follow exponentiated
gradient on the mixture's prequential log loss (w_i <- w_i * exp(eta * p_i(y) / p(y)), normalised,
then kept in [floor, 1 - floor]): unlike a hedge, which goes to the single better expert, this
finds the best *mixture* (at the end of river's Bananas 0.49 / 0.51, Phishing 0.76 / 0.24;
issue 15, benchmarks/results/core_lr.md, round 6).

Votes are exact and independent of the order of the memory: the rows closer than the k-th distance
vote 1 each, and the rows at exactly the k-th distance share what is left of the k votes; a
distance is the sum of squared differences computed element by element, the same for a row
predicted alone or in a frame. Rows are added, and the weights move, when the learner steps
(with the scaler as it predicted them), so `learn_many` and a loop of `learn_one` give the same
expert; the probabilities a prediction computed are kept until that step, which reads them back
instead of computing them again. The rows of a frame are voted on in blocks (`votes`: one numpy
call per block for the distances and the k-th distance of every row, the same arithmetic per row
as `vote`): about 9 us a row against 18 us one at a time, with 1,000 rows of 9 features. After a
drift re-warm of the learner the memory is emptied (the old concept's rows).

>>> import numpy as np
>>> ex = NeighbourExpert(k=3, memory=100)
>>> rng = np.random.default_rng(0)
>>> Z = rng.normal(size=(200, 2))
>>> T = (Z[:, 0] * Z[:, 1] > 0).astype(np.int64)     # a checkerboard: no linear boundary
>>> ex.learn(Z, T)
>>> ex.proba(np.array([[1.0, 1.0], [1.0, -1.0]]), 2).round(2).tolist()
[[0.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .alarm_density import kth_smallest

__all__ = ["NeighbourExpert", "NeighbourMixin", "K", "MEMORY", "MAX_INPUTS"]

K = 10            # neighbours that vote
MEMORY = 1000     # rows kept (the most recent)
MAX_INPUTS = 128  # wider inputs: the network alone (a vote over many features is weak, and costly)
ETA, FLOOR = 0.1, 0.02
_BLOCK_VALUES = 1 << 17   # differences computed per numpy call in `votes` (float32: 512 KiB)


class NeighbourExpert:
    """The last `memory` scaled rows and their classes; a k-nearest vote; the mixture's weights.

    Parameters
    ----------
    k
        Neighbours that vote (fewer while the memory holds fewer rows).
    memory
        Rows kept, the most recent.
    eta, floor
        Exponentiated-gradient step of the two weights, and the least weight either keeps.
    """

    def __init__(self, k: int = K, memory: int = MEMORY, eta: float = ETA, floor: float = FLOOR):
        if not (isinstance(k, int) and k >= 1 and isinstance(memory, int) and memory >= k):
            raise ValueError(f"k={k!r}, memory={memory!r}: use 1 <= k <= memory")
        self.k, self.memory, self.eta, self.floor = k, memory, float(eta), float(floor)
        self.R = np.zeros((0, memory), dtype=np.float32)   # the rows held, one column each (a ring)
        self.T = np.zeros(memory, dtype=np.int64)
        self.n = self.head = 0
        self.w = np.array([0.5, 0.5])            # the network's weight, the vote's

    # -- the vote ----------------------------------------------------------------------------

    def vote(self, z: np.ndarray, n_classes: int) -> np.ndarray:
        """One finite scaled row (F,) float32 -> its (n_classes,) vote shares (uniform while the
        memory is empty)."""
        n, F = self.n, len(self.R)
        if n == 0:
            return np.full(n_classes, 1.0 / max(1, n_classes))
        if len(z) != F:                                   # a row of another width: 0 (the mean) beyond it
            z = np.concatenate([z[:F], np.zeros(max(0, F - len(z)), dtype=np.float32)])
        d = self.R[:, :n] - z[:, None]                    # (F, n): a feature's values are contiguous
        d *= d
        D = np.add.reduce(d, axis=0)
        T = self.T[:n]
        k = min(self.k, n)
        kth = np.partition(D, k - 1)[k - 1] if k < n else D.max()
        near = D <= kth
        if np.count_nonzero(near) == k:                   # no tie across the k-th place
            v = np.bincount(T[near], minlength=n_classes)[:n_classes] / k
        else:                                             # the tied rows share the last places
            less, at = D < kth, D == kth
            v = (np.bincount(T[less], minlength=n_classes)[:n_classes]
                 + np.bincount(T[at], minlength=n_classes)[:n_classes]
                 * ((k - np.count_nonzero(less)) / np.count_nonzero(at))) / k
        return v

    def votes(self, Z: np.ndarray, n_classes: int) -> np.ndarray:
        """`vote` of every row of Z (m, F) finite float32, a block of rows per numpy call: the same
        operations on each row in the same order (a row's differences are summed over the features
        one after the other, as `vote` sums them), so the same shares bit for bit."""
        m, n, F = len(Z), self.n, len(self.R)
        if n == 0 or m == 0:
            return np.full((m, n_classes), 1.0 / max(1, n_classes))
        if Z.shape[1] != F:
            Z = np.concatenate([Z[:, :F], np.zeros((m, max(0, F - Z.shape[1])), dtype=np.float32)], axis=1)
        R, T = self.R[:, :n], self.T[:n]
        k = min(self.k, n)
        onehot = np.zeros((n, n_classes))
        ok = T < n_classes
        onehot[ok.nonzero()[0], T[ok]] = 1.0
        out = np.empty((m, n_classes))
        buf = np.empty((min(m, max(1, _BLOCK_VALUES // (F * n or 1))), F, n), dtype=np.float32)   # a block's differences
        for a in range(0, m, len(buf)):
            Zb = Z[a:a + len(buf)]
            d = np.subtract(R[None], Zb[:, :, None], out=buf[: len(Zb)])   # (b, F, n)
            d *= d
            D = np.add.reduce(d, axis=1)                                   # (b, n)
            kth = (kth_smallest(D if n % 128 else D.copy(), k) if k < n else D.max(axis=1))[:, None]
            near = D <= kth
            V = (near @ onehot) / k
            tied = (np.count_nonzero(near, axis=1) != k).nonzero()[0]
            if len(tied):
                less, at = D[tied] < kth[tied], D[tied] == kth[tied]
                share = (k - np.count_nonzero(less, axis=1)) / np.count_nonzero(at, axis=1)
                V[tied] = ((less @ onehot) + (at @ onehot) * share[:, None]) / k
            out[a:a + len(Zb)] = V
        return out

    def proba(self, Z: np.ndarray, n_classes: int) -> np.ndarray:
        """(m, F) scaled rows -> (m, n_classes) vote shares; a row gets the same shares alone or
        in a frame."""
        return self.votes(finite32(Z), n_classes)

    def mix(self, net: np.ndarray, vote: np.ndarray) -> np.ndarray:
        return self.w[0] * net + self.w[1] * vote

    # -- learning ----------------------------------------------------------------------------

    def learn(self, Z: np.ndarray, T: np.ndarray, p_net=None, p_vote=None, W=None) -> None:
        """Scaled rows (m, F) and their class indices (m,), with the probability that the network
        and the vote gave each row's class when they predicted it (m floats; None while the memory is
        empty: then no weight moves): the weights move on the rows' mixture log loss, then the
        rows join the memory (rows of weight 0 do not)."""
        T = np.asarray(T, dtype=np.int64)
        if self.n and p_net is not None:
            w_net, w_vote = self.w.tolist()
            g = 0.0                                       # sum of (p_vote(y) - p_net(y)) / p(y): d log p(y) / d w_i = p_i(y) / p(y)
            for i, (pn, pv) in enumerate(zip(p_net, p_vote)):
                gi = (pv - pn) / max(w_net * pn + w_vote * pv, 1e-12)
                g += gi if W is None else gi * float(W[i])
            if math.isfinite(g):
                z = math.log(w_vote / w_net) + self.eta * g   # log(w_vote / w_net) after the step
                w_vote = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
                w_vote = min(max(w_vote, self.floor), 1.0 - self.floor)
                self.w = np.array([1.0 - w_vote, w_vote])
        Z = finite32(Z)
        if W is not None:
            keep = np.asarray(W) > 0
            Z, T = Z[keep], T[keep]
        if len(Z) == 1 and Z.shape[1] <= len(self.R):   # one row (a step per event): one column of the ring
            h = self.head
            self.R[: Z.shape[1], h] = Z[0]
            self.R[Z.shape[1]:, h] = 0.0
            self.T[h] = T[0]
            self.head = (h + 1) % self.memory
            self.n = min(self.n + 1, self.memory)
        else:
            self._add(Z, T)

    def _add(self, Z: np.ndarray, T: np.ndarray) -> None:
        F = Z.shape[1]
        if F > len(self.R):   # new inputs: the rows held read 0 there (the mean)
            R = np.zeros((F, self.memory), dtype=np.float32)
            R[: len(self.R)] = self.R
            self.R = R
        Z, T = Z[-self.memory:], T[-self.memory:]
        i = 0
        while i < len(Z):   # at most two slices of the ring
            j = min(len(Z), i + self.memory - self.head)
            at = slice(self.head, self.head + j - i)
            self.R[:F, at] = Z[i:j].T
            self.R[F:, at] = 0.0
            self.T[at] = T[i:j]
            self.head = (self.head + j - i) % self.memory
            i = j
        self.n = min(self.n + len(Z), self.memory)

    def forget(self) -> None:
        """Empty the memory (after a drift); the weights stay."""
        self.n = self.head = 0

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"R": torch.from_numpy(self.R[:, : self.n].T.copy()), "T": torch.from_numpy(self.T[: self.n].copy()),
                "head": self.head, "w": torch.from_numpy(self.w.copy()),
                "hyper": [self.k, self.memory, self.eta, self.floor]}

    @classmethod
    def from_state(cls, s: dict) -> "NeighbourExpert":
        k, memory, eta, floor = s["hyper"]
        ex = cls(int(k), int(memory), eta, floor)
        R, T = s["R"].numpy(), s["T"].numpy()
        if R.ndim != 2 or len(R) != len(T) or len(R) > ex.memory or not 0 <= int(s["head"]) < ex.memory:
            raise ValueError("a neighbour-expert state whose rows, classes and ring position do not match")
        ex.R = np.zeros((R.shape[1], ex.memory), dtype=np.float32)
        ex.R[:, : len(R)] = R.T
        ex.T[: len(T)] = T
        ex.n, ex.head = len(R), int(s["head"])
        ex.w = s["w"].numpy().astype(np.float64, copy=True)
        if ex.w.shape != (2,) or not (np.isfinite(ex.w).all() and math.isclose(ex.w.sum(), 1.0)):
            raise ValueError("a neighbour-expert state whose weights are not two finite shares of 1")
        return ex


BOUND = 1e17   # |scaled value| held at most (squares of differences then sum without overflow)


def finite32(Z) -> np.ndarray:
    """Scaled rows as float32 within +-`BOUND` (the scaler winsorises: only a broken input
    reaches the bound; NaN reads 0, the mean)."""
    Z = np.asarray(Z, dtype=np.float32)
    if not np.maximum.reduce(np.abs(Z), axis=None, initial=0.0) <= BOUND:   # NaN fails the test
        Z = np.clip(np.nan_to_num(Z, nan=0.0), -BOUND, BOUND)
    return Z


class NeighbourMixin:
    """`MLPClassifier(neighbors=k)`: `neighbors_`, a `NeighbourExpert` on the inputs the network
    sees (up to `MAX_INPUTS` of them), learns the rows of every step before the network does and
    is mixed into every prediction. Mixed in before the linear experts and `TorchClassifier`
    (hooks: `_build`, `_grow_inputs`, `_step`, `_after_drift`, `_proba`, the extra state)."""

    def _reset(self):
        self.neighbors_ = None
        self._seen = {}   # scaled row bytes -> (network's, vote's) probabilities, until the next step
        super()._reset()

    def _build(self, n_in: int):
        super()._build(n_in)
        if self.neighbors and self.neighbors_ is None and n_in <= MAX_INPUTS:   # a loaded state brings its own
            self.neighbors_ = NeighbourExpert(int(self.neighbors))

    def _grow_inputs(self, n_in: int):
        super()._grow_inputs(n_in)
        if n_in > MAX_INPUTS:   # too wide for a useful vote: the network (and linear experts) alone
            self.neighbors_ = None

    def _after_drift(self):
        super()._after_drift()
        if self.neighbors_ is not None:
            self.neighbors_.forget()

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        P = super()._proba(Z)
        ex = self.neighbors_
        if ex is None or ex.n == 0 or Z.ndim != 2:
            return P
        Z = finite32(Z)
        n, seen = P.shape[1], self._seen
        keys = [z.tobytes() for z in Z]
        got = [seen.get(key) for key in keys]
        miss = [i for i, g in enumerate(got) if g is None or len(g[1]) != n]
        if miss:
            V = ex.vote(Z[0], n)[None] if len(Z) == 1 else ex.votes(Z[miss] if len(miss) < len(Z) else Z, n)
            for j, i in enumerate(miss):
                got[i] = (P[i], V[j])
                if len(seen) < 4096:   # the step reads them back: network and memory are unchanged until then
                    seen[keys[i]] = got[i]
        return ex.mix(P, np.array([g[1] for g in got]) if len(got) > 1 else got[0][1][None])

    def predict_proba_one(self, x: dict) -> dict:
        ex = self.neighbors_
        if ex is None or ex.n == 0:
            return super().predict_proba_one(x)
        P = self._proba(self._scale(self.features_.row(x, grow=False))[None])[0]
        return dict(zip(self.classes_, P.tolist()))

    def _step(self):
        """Before the linear experts and the network step: the weights move on the new rows'
        predictions (made with the scaler, network and memory as they are until this step), and
        the rows join the memory."""
        ex = self.neighbors_
        if ex is not None and self._pending and self.classes_:
            X, Y, W = self.buffer_.last(self._pending, copy=False)   # read before the step writes
            Z = finite32(self._scale(X))
            T = self._prepare_targets(Y)
            unit = self.buffer_.unit or bool((W == 1.0).all())
            pn = pv = None
            if ex.n:
                n, seen = len(self.classes_), self._seen
                got = [seen.get(z.tobytes()) for z in Z]
                miss = [i for i, g in enumerate(got) if g is None or len(g[1]) != n]
                if miss:
                    P = super()._proba(Z[miss])
                    V = ex.vote(Z[miss[0]], n)[None] if len(miss) == 1 else ex.votes(Z[miss], n)
                    for j, i in enumerate(miss):
                        got[i] = (P[j], V[j])
                pn = [float(g[0][t]) for g, t in zip(got, T.tolist())]
                pv = [float(g[1][t]) for g, t in zip(got, T.tolist())]
            ex.learn(Z, T, pn, pv, None if unit else W)
        self._seen.clear()
        super()._step()

    def _extra_state(self):
        s = {**super()._extra_state(), "neighbors": int(self.neighbors or 0)}
        if self.neighbors_ is not None:
            s["neighbor_expert"] = self.neighbors_.state_dict()
        return s

    def _load_extra_state(self, s):
        super()._load_extra_state(s)
        self.neighbors_ = None
        if self.neighbors and "neighbor_expert" in s:
            self.neighbors_ = NeighbourExpert.from_state(s["neighbor_expert"])
