"""A fast linear path next to a network: recursive least squares with forgetting, blended by hedge.

A network learns slowly in its first few hundred events and on a stream whose relation drifts;
a linear model fitted by recursive least squares (RLS) is exact from the first events and, with
exponential forgetting, follows a drifting relation within a few dozen events. `LinearPath`
keeps K such models (one per forgetting factor, all in one (K, d, d) array) on the inputs and
target in their own units (RLS does not depend on their scale; the caller passes them winsorised
by its running scalers), and mixes them with the network by exponentially weighted
hedge: each expert's weight is softmax(-eta * L) over L, its exponentially weighted sum of
prequential absolute errors (in units of the target's deviation; a memory of about 1/(1 - beta)
= 100 events). Where the network is better (a stationary non-linear stream), its weight goes to
1; where a linear model tracks better, that one leads. Absolute rather than squared errors: with
squared ones the linear models kept half the weight on river's Mv (heavy-tailed errors) and the
mix lost 4 % of MAE there (benchmarks/results/core_lr.md, session 8).

The models learn the offsets of the rows and targets from the first ones (better conditioned
than raw values such as a date or a timestamp). Guards: a block of rows whose result is not
finite leaves that model's state as it was (counted in `n_reset`); under forgetting, a diagonal
element of P beyond `CAP * delta` is scaled back (no wind-up of a direction no row excites, such
as a constant column); the linear predictions are clipped to the target's
mean +- `clip` deviations, and a loss that is not finite counts as 1e6.

>>> import numpy as np
>>> path = LinearPath(2, lambdas=(1.0, 0.9))
>>> rng = np.random.default_rng(0)
>>> for _ in range(50):
...     z = rng.normal(size=(1, 2))
...     t = z @ np.array([2.0, -1.0]) + 0.5
...     path.learn(z, t, np.zeros(1), 0.0, 1.0)   # the network predicts 0
>>> p = path.blend(np.array([[1.0, 1.0]]), np.zeros(1), 0.0, 1.0)
>>> round(float(p[0]), 2)
1.5
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LinearPath", "LAMBDAS", "hedge_weights", "decayed_sum"]

# The forgetting factors of the default linear path (benchmarks/results/core_lr.md, session 8).
LAMBDAS = (1.0, 0.98, 0.95, 0.9)


def hedge_weights(L: np.ndarray, eta: float) -> np.ndarray:
    """Exponentially weighted hedge: softmax(-eta * L) over the experts' losses L, computed from
    L's minimum (no overflow)."""
    e = np.exp(-eta * (L - L.min()))
    return e / e.sum()


def decayed_sum(L: np.ndarray, err: np.ndarray, beta: float) -> np.ndarray:
    """The losses L (E,) decayed by `beta` per row and added the rows' losses err (n, E), in order."""
    n = len(err)
    if n == 1:
        return beta * L + err[0]
    return beta ** n * L + beta ** np.arange(n - 1, -1, -1.0) @ err


class LinearPath:
    """K RLS linear models (forgetting factors `lambdas`) and a hedge over them and a network.

    Parameters
    ----------
    n_features
        Input width (a bias column is added here).
    lambdas
        One forgetting factor per linear model, each in (0, 1].
    delta
        Initial covariance `delta * I` (a ridge prior of 1/delta).
    beta, eta
        Hedge: the losses decay by `beta` per event; weights are softmax(-eta * losses).
    clip
        Linear predictions are clipped to the target's mean +- clip deviations.
    """

    CAP = 1e7   # P's diagonal never exceeds CAP * delta (no wind-up under forgetting)

    def __init__(self, n_features: int, lambdas=LAMBDAS, delta: float = 10.0, beta: float = 0.99,
                 eta: float = 4.0, clip: float = 10.0):
        self.lambdas = np.asarray(lambdas, dtype=np.float64)
        if self.lambdas.ndim != 1 or len(self.lambdas) == 0 or not ((self.lambdas > 0) & (self.lambdas <= 1)).all():
            raise ValueError(f"lambdas={tuple(lambdas)!r}: give one or more forgetting factors in (0, 1]")
        self.delta, self.beta, self.eta, self.clip = float(delta), float(beta), float(eta), float(clip)
        K, d = len(self.lambdas), n_features + 1
        self.W = np.zeros((K, d))                              # (K, d) weights; the last: bias
        self.P = np.tile(np.eye(d) * self.delta, (K, 1, 1))    # (K, d, d) inverse information
        self._lam_inv = (1.0 / self.lambdas)[:, None, None]
        self._cap = self.CAP * self.delta
        self.L = np.zeros(K + 1)                               # hedge losses: K linear, then the network
        self.origin = None      # (d,): the first row and target; the models learn the offsets from them
        self._ox = None         # the origin's columns, then 0 (subtracted from rows with their bias 1)
        self.n_reset = 0                                       # model states refused as not finite
        self._weights = self._mix = None

    @property
    def n_features(self) -> int:
        return self.W.shape[1] - 1

    def grow(self, n_features: int):
        """New input columns (a new feature): zero weights, the prior covariance on them."""
        K, d = self.W.shape
        n = n_features + 1 - d
        if n <= 0:
            return
        W = np.zeros((K, d + n))
        W[:, : d - 1], W[:, -1] = self.W[:, :-1], self.W[:, -1]
        idx = np.r_[0 : d - 1, d + n - 1]     # old columns and the bias keep their block
        P = np.tile(np.eye(d + n) * self.delta, (K, 1, 1))
        P[np.ix_(range(K), idx, idx)] = self.P
        self.W, self.P = W, P
        self._mix = None
        if self.origin is not None:   # the new columns' origin: 0
            self.origin = np.r_[self.origin[:-1], np.zeros(n), self.origin[-1]]
            self._ox = np.r_[self.origin[:-1], 0.0]

    def weights(self) -> np.ndarray:
        """(K + 1,) hedge weights: the linear models, then the network."""
        if self._weights is None:
            self._weights = hedge_weights(self.L, self.eta)
        return self._weights

    def blend(self, X: np.ndarray, net: np.ndarray, center: float, unit: float) -> np.ndarray:
        """(n, F) inputs and (n,) network predictions -> (n,) blended predictions: the network's
        weight times its prediction plus the linear models' weighted sum, clipped to the window
        center +- clip * unit (the target's running mean and deviation) scaled by their weight.
        Linear weights below 1e-4 in all are left out (the network's prediction as it is)."""
        wn = float(self.weights()[-1])
        if wn >= 1.0 - 1e-4:   # `network_only`
            return net
        if self.origin is None:   # nothing learned yet: each linear model predicts the mean
            return (1.0 - wn) * center + wn * net
        v, c = self._mixed()
        lo, hi = (1.0 - wn) * (center - self.clip * unit), (1.0 - wn) * (center + self.clip * unit)
        return np.minimum(np.maximum(X @ v + c, lo), hi) + wn * net

    def blend_one(self, X: np.ndarray, net: float, center: float, unit: float) -> float:
        """`blend` of one row X (1, F) and the network's prediction `net` (a float): the same
        IEEE operations in the same order, in Python floats after the one product (predict_one's
        path, without the overhead of numpy calls on one value)."""
        wn = float(self.weights()[-1])
        if wn >= 1.0 - 1e-4:   # `network_only`
            return net
        if self.origin is None:
            return (1.0 - wn) * center + wn * net
        v, c = self._mixed()
        lo, hi = (1.0 - wn) * (center - self.clip * unit), (1.0 - wn) * (center + self.clip * unit)
        y = float((X @ v)[0]) + c
        y = lo if y < lo else y          # np.maximum / np.minimum: NaN stays NaN
        y = hi if y > hi else y
        return y + wn * net

    def network_only(self) -> bool:
        """Whether the linear models' weights are below 1e-4 in all (left out of the blend: they
        change a prediction by less than 1e-4 of their distance to the network's)."""
        return self.weights()[-1] >= 1.0 - 1e-4

    def _mixed(self) -> tuple:
        """The linear models' weighted sum as one affine map (v, c): `X @ v + c`."""
        if self._mix is None:
            w = self.weights()[:-1]
            v = w @ self.W                                  # (d,)
            x0, t0 = self.origin[:-1], self.origin[-1]
            self._mix = v[:-1], float(v[-1] + np.add.reduce(w) * t0 - v[:-1] @ x0)
        return self._mix

    def _clipped(self, P: np.ndarray, center: float, unit: float) -> np.ndarray:
        """Predictions as offsets from the target's origin, clipped to center +- clip * unit."""
        h, t0 = self.clip * unit, float(self.origin[-1])
        np.maximum(P, center - t0 - h, out=P)
        return np.minimum(P, center - t0 + h, out=P)

    def _offsets(self, X: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, d): the columns' offsets from the origin, then 1 (the bias)."""
        d = self.W.shape[1]
        Z = np.concatenate((X, np.ones((len(X), 1))), axis=1) if X.shape[1] == d - 1 else _with_bias(X, d)
        Z -= self._ox
        return Z

    def learn(self, X: np.ndarray, T: np.ndarray, net: np.ndarray, center: float, unit: float, W=None):
        """Rows (n, F) with targets (n,), and the network's prequential predictions on them (n,):
        the hedge scores every expert on each row's prediction made before it (the linear models'
        as of the last call, as they predicted; absolute errors in units of `unit`), then the
        linear models learn the rows (`_solve`)."""
        n, K = len(T), len(self.W)
        first = self.origin is None   # the linear models predicted the target's mean (`blend`)
        if first:
            self.origin = _with_bias(X[:1], self.W.shape[1])[0]
            self.origin[-1] = T[0]
            self._ox = np.r_[self.origin[:-1], 0.0]
        with np.errstate(over="ignore", invalid="ignore"):   # a non-finite result is refused below
            self._learn(X, T, net, center, unit, W, first)

    def _learn(self, X, T, net, center, unit, W, first):
        n, K = len(T), len(self.W)
        t0 = float(self.origin[-1])
        Z = self._offsets(X)                                       # (n, d)
        if n == 1:
            t = [float(T[0]) - t0]
            self._score_one(Z, t[0], float(T[0]), float(net[0]), center, unit, first)
            self._weights = self._mix = None
            return self._solve(Z, t, W)
        t = T - t0                                                 # (n,)
        err = np.empty((n, K + 1))
        np.subtract(center - t0 if first else self._clipped(Z @ self.W.T, center, unit), t[:, None], out=err[:, :K])
        np.subtract(net, T, out=err[:, K])
        err *= 1.0 / unit
        np.abs(err, out=err)
        np.fmin(err, 1e6, out=err)                                 # NaN or inf -> 1e6
        self.L = decayed_sum(self.L, err, self.beta)
        self._weights = self._mix = None
        self._solve(Z, t, W)

    def _score_one(self, Z, t, T, net, center, unit, first):
        """The hedge's update of `_learn` for one row, in Python floats after the one product: the
        same IEEE operations in the same order as the array expressions."""
        t0 = float(self.origin[-1])
        if first:
            preds = [center - t0] * len(self.W)
        else:
            h = self.clip * unit
            lo, hi = center - t0 - h, center - t0 + h
            preds = [(hi if p > hi else p) for p in ((lo if p < lo else p) for p in (Z @ self.W.T)[0].tolist())]   # `_clipped`
        s, beta = 1.0 / unit, self.beta
        L = []
        for l0, e in zip(self.L.tolist(), [p - t for p in preds] + [net - T]):
            e = abs(e * s)
            L.append(l0 * beta + (e if e < 1e6 else 1e6))         # np.fmin: NaN or inf -> 1e6
        self.L = np.array(L)

    def _solve(self, Z: np.ndarray, t: np.ndarray, w=None):
        """Every model learns the rows Z (n, d) with targets t (n,) in order: one recursive
        least-squares step each (Sherman-Morrison on P, the inverse information, then P / lam).
        P stays exactly symmetric (its update is an outer product of one vector with itself).
        Written for one row at a time (the usual call): few numpy calls, each on whole arrays."""
        W, P, lambdas, lam_inv = self.W, self.P, self.lambdas, self._lam_inv
        K, d = W.shape
        for i in range(len(t)):
            z = Z[i]
            Pz = P @ z                                               # (K, d)
            if w is None:
                c = 1.0 / (lambdas + Pz.dot(z))                      # (K,)
            else:
                wi = float(w[i])
                c = wi / (lambdas + wi * Pz.dot(z))
            W = W + Pz * ((t[i] - W.dot(z)) * c)[:, None]
            G = Pz[:, :, None] * Pz[:, None, :]                      # (K, d, d)
            G *= c[:, None, None]
            P = np.subtract(P, G, out=G)
            P *= lam_inv
        diag = P.reshape(K, -1)[:, :: d + 1]                         # (K, d), a view
        if np.maximum.reduce(diag, axis=None) > self._cap:   # no wind-up of a direction no row excites (a constant column)
            D = np.sqrt(self._cap / np.maximum(diag, self._cap))
            P = P * (D[:, :, None] * D[:, None, :])
            diag = P.reshape(K, -1)[:, :: d + 1]
        if not math.isfinite(float(np.add.reduce(W, axis=None)) + float(np.add.reduce(P.reshape(-1)))) or (
                np.minimum.reduce(diag, axis=None) <= 0):
            ok = np.isfinite(W).all(axis=1) & np.isfinite(P).all(axis=(1, 2)) & (diag > 0).all(axis=1)
            self.n_reset += int((~ok).sum())
            W[~ok], P[~ok] = self.W[~ok], self.P[~ok]
        self.W, self.P = W, P

    def state_dict(self) -> dict:
        return {"lambdas": torch.from_numpy(self.lambdas.copy()), "W": torch.from_numpy(self.W.copy()),
                "P": torch.from_numpy(self.P.copy()), "L": torch.from_numpy(self.L.copy()),
                "origin": torch.from_numpy(np.array([] if self.origin is None else self.origin)),
                "n_reset": self.n_reset, "hyper": [self.delta, self.beta, self.eta, self.clip]}

    def load_state_dict(self, s: dict):
        lambdas = s["lambdas"].numpy()
        if lambdas.shape != self.lambdas.shape or not np.array_equal(lambdas, self.lambdas):
            raise ValueError(f"a linear path with lambdas {tuple(lambdas.tolist())}, not {tuple(self.lambdas.tolist())}")
        self.W, self.P, self.L = (s[k].numpy().astype(np.float64, copy=True) for k in ("W", "P", "L"))
        self.n_reset = int(s["n_reset"])
        origin = s["origin"].numpy()
        self.origin = origin.astype(np.float64, copy=True) if len(origin) else None
        self._ox = None if self.origin is None else np.r_[self.origin[:-1], 0.0]
        self.delta, self.beta, self.eta, self.clip = map(float, s["hyper"])
        self._cap = self.CAP * self.delta
        self._weights = self._mix = None


def _with_bias(Z: np.ndarray, d: int) -> np.ndarray:
    """(n, F) -> (n, d) float64: the first d - 1 columns (zero-padded), then a column of ones."""
    n, F = Z.shape
    out = np.empty((n, d)) if F == d - 1 else np.zeros((n, d))
    m = min(F, d - 1)
    out[:, :m] = Z[:, :m]
    out[:, -1] = 1.0
    return out
