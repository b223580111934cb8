"""Linear experts next to a classifier's network: online logistic regressions, blended by hedge.

A network learns slowly in its first events and after an abrupt drift; a multinomial logistic
regression on the same standardized inputs, trained by stochastic gradient from the first event,
is good early and, with a large step, re-learns a linear concept within a few hundred events.
`LinearExperts` keeps K such models (one per step size, all in one (K, d, C) array, one matmul
for all) and mixes their class probabilities with the network's by exponentially weighted hedge:
each expert's weight is softmax(-eta * L) over L, its exponentially weighted sum of prequential
log losses (a memory of about 1/(1 - beta) = 100 events). Where the network is better (a
stationary non-linear stream) its weight goes to 1 and predictions are the network's alone;
where a linear model predicts better (early, a linear concept, after a drift) that one leads.

The step of a row is normalised by its squared norm (`step / (1 + |z|^2)`, as NLMS does), so a
step size means the same at any input width. The rows between two of the learner's steps learn
as one mini-batch (the sum of their gradients at the weights that predicted them): `learn_many`
and a loop of `learn_one` take the same steps, hence the same weights. Guards: a model whose
weights are not finite after a step keeps its weights from before it (counted in `n_reset`);
a log loss that is not finite counts as `LOSS_CAP`.

>>> import numpy as np
>>> experts = LinearExperts(2, 2)
>>> rng = np.random.default_rng(0)
>>> for _ in range(300):
...     z = rng.normal(size=(1, 2))
...     t = (z[:, 0] - z[:, 1] > 0).astype(np.int64)
...     experts.learn(z, t, np.full((1, 2), 0.5))   # the network knows nothing
>>> p = experts.blend(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.full((2, 2), 0.5))
>>> bool(p[0, 1] > 0.8 and p[1, 0] > 0.8), bool(experts.weights()[-1] < 0.01)
(True, True)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .linear_path import decayed_sum, hedge_weights

__all__ = ["LinearExperts", "LinearExpertMixin", "STEPS", "hedge_weights", "decayed_sum"]

# The step sizes of the default linear experts (benchmarks/results/core_lr.md, session 9).
STEPS = (0.05, 0.25, 1.0)
HEAD_START = 6.0   # nats (`LinearExperts(head_start=...)`)
LOSS_CAP = 3.0    # a log loss beyond this (a probability below 0.05, or not finite) counts as this


class LinearExperts:
    """K multinomial logistic regressions (step sizes `steps`) and a hedge over them and a network.

    Parameters
    ----------
    n_features
        Input width (a bias column is added here).
    n_classes
        Output width (columns of the weights; more are added with `grow`).
    steps
        One normalised SGD step size per model, each > 0.
    beta, eta
        Hedge: the log losses decay by `beta` per event; weights are softmax(-eta * losses).
    head_start
        The linear models' losses start at this, the network's at 0: they lead only once they have
        predicted better by this many nats (on river's Bananas, a non-linear stream, an even start
        let them lead in the first 200 events, where the network already classified better).
    """

    def __init__(self, n_features: int, n_classes: int, steps=STEPS, beta: float = 0.99, eta: float = 1.0,
                 head_start: float = HEAD_START):
        self.steps = np.asarray(steps, dtype=np.float64)
        if self.steps.ndim != 1 or len(self.steps) == 0 or not (np.isfinite(self.steps) & (self.steps > 0)).all():
            raise ValueError(f"steps={tuple(steps)!r}: give one or more positive step sizes")
        self.beta, self.eta = float(beta), float(eta)
        self.W = np.zeros((n_features + 1, len(self.steps), max(1, n_classes)))   # (d, K, C); row d-1: bias
        self.L = np.zeros(len(self.steps) + 1)        # hedge losses: K linear, then the network
        self.L[:-1] = head_start
        self.n_reset = 0                              # model states refused as not finite
        self._weights = self._steps_n = None

    @property
    def n_features(self) -> int:
        return self.W.shape[0] - 1

    def grow(self, n_features: int, n_classes: int):
        """New input columns (zero weights) and new classes (zero logits); the bias stays last."""
        d, K, C = self.W.shape
        if n_features + 1 <= d and n_classes <= C:
            return
        W = np.zeros((max(d, n_features + 1), K, max(C, n_classes)))
        W[: d - 1, :, :C], W[-1, :, :C] = self.W[:-1], self.W[-1]
        self.W = W

    def weights(self) -> np.ndarray:
        """(K + 1,) hedge weights: the linear models, then the network."""
        if self._weights is None:
            self._weights = hedge_weights(self.L, self.eta)
        return self._weights

    def network_only(self) -> bool:
        """Whether the linear models' weights are below 1e-4 in all (left out of the blend)."""
        return self.weights()[-1] >= 1.0 - 1e-4

    def _rows(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows (m, F) -> (m, d) float64: the first d - 1 columns (zero-padded), then 1 (the bias)."""
        m, F = Z.shape
        d = self.W.shape[0]
        X = np.empty((m, d)) if F >= d - 1 else np.zeros((m, d))
        F = min(F, d - 1)
        X[:, :F] = Z[:, :F]
        X[:, -1] = 1.0
        return X

    def _probas(self, X: np.ndarray, n: int) -> np.ndarray:
        """Rows with their bias (m, d) -> (m, K, n) class probabilities of each model over the first
        n classes (one 2-D matmul for all models)."""
        d, K, C = self.W.shape
        W = self.W.reshape(d, K * C) if n == C else self.W[:, :, :n].reshape(d, K * n)
        logits = (X @ W).reshape(len(X), K, n)                       # (m, K, n)
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits, out=logits)
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def blend(self, Z: np.ndarray, net: np.ndarray) -> np.ndarray:
        """(m, F) scaled rows and the network's (m, n) class probabilities -> the hedge mix (m, n)."""
        if self.network_only():
            return net
        w = self.weights()
        mix = w[:-1] @ self._probas(self._rows(Z), net.shape[1])      # (K,) @ (m, K, n) -> (m, n)
        mix += w[-1] * net
        return mix

    def learn(self, Z: np.ndarray, T: np.ndarray, net: np.ndarray, W=None):
        """Scaled rows (m, F), their class indices (m,) and the network's prequential class
        probabilities on them (m, n): the hedge scores every expert's probability of the true class
        on each row (the linear models' as of the last call, as they predicted), then the linear
        models take one step on the rows' summed gradients (weighted by `W`, if given)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # non-finite: refused below
            self._learn(self._rows(Z), np.asarray(T, dtype=np.int64), net, W)

    def _learn(self, X, T, net, W):
        m, n = net.shape
        d, K, C = self.W.shape
        P = self._probas(X, n)                                       # (m, K, n)
        rows = np.arange(m)
        err = np.empty((m, K + 1))
        err[:, :K] = P[rows, :, T]
        err[:, K] = net[rows, T]
        err = -np.log(err, out=err)
        np.fmin(err, LOSS_CAP, out=err)                              # NaN or inf -> LOSS_CAP
        self.L = decayed_sum(self.L, err, self.beta)
        self._weights = None
        P[rows, :, T] -= 1.0                                         # the gradient of the log loss in the logits
        s = 1.0 / (1.0 + np.add.reduce(X * X, axis=1))               # (m,) NLMS normalisation
        if W is not None:
            s = s * W
        G = (X * s[:, None]).T @ P.reshape(m, K * n)                 # (d, K * n)
        G *= self._step_row(n)
        if n == C:
            new = self.W + G.reshape(d, K, n)
        else:
            new = self.W.copy()
            new[:, :, :n] += G.reshape(d, K, n)
        if not math.isfinite(float(np.add.reduce(new, axis=None))):
            ok = np.isfinite(new).all(axis=(0, 2))                   # (K,)
            self.n_reset += int((~ok).sum())
            new[:, ~ok] = self.W[:, ~ok]
        self.W = new

    def _step_row(self, n: int) -> np.ndarray:
        """(K * n,): minus each model's step size, repeated over its n classes (as G's columns)."""
        if self._steps_n is None or len(self._steps_n) != len(self.steps) * n:
            self._steps_n = -np.repeat(self.steps, n)
        return self._steps_n

    def state_dict(self) -> dict:
        return {"steps": torch.from_numpy(self.steps.copy()), "W": torch.from_numpy(self.W.copy()),
                "L": torch.from_numpy(self.L.copy()), "n_reset": self.n_reset, "hyper": [self.beta, self.eta]}

    @classmethod
    def from_state(cls, s: dict) -> "LinearExperts":
        W = s["W"].numpy()
        experts = cls(W.shape[0] - 1, W.shape[2], steps=s["steps"].numpy().tolist(), beta=s["hyper"][0],
                      eta=s["hyper"][1])
        experts.W, experts.L = W.astype(np.float64, copy=True), s["L"].numpy().astype(np.float64, copy=True)
        if experts.W.shape[1] != len(experts.steps) or experts.L.shape != (len(experts.steps) + 1,):
            raise ValueError("a linear-experts state whose weights and losses do not match its steps")
        experts.n_reset = int(s["n_reset"])
        return experts


class LinearExpertMixin:
    """`MLPClassifier(linear=True)`: `linear_`, a `LinearExperts` on the inputs the network sees,
    learns the rows of every step before the network does and is blended into every prediction.
    Mixed in before `TorchClassifier` (its hooks: `_build`, `_grow_inputs`, `_add_class`, `_step`,
    `_proba`, the extra state)."""

    def _reset(self):
        self.linear_ = None
        super()._reset()

    def _build(self, n_in: int):
        super()._build(n_in)
        if self.linear and self.linear_ is None:   # a loaded state brings its own
            self.linear_ = LinearExperts(n_in, self._out_width)

    def _grow_inputs(self, n_in: int):
        super()._grow_inputs(n_in)
        if self.linear_ is not None:
            self.linear_.grow(n_in, self._out_width)

    def _add_class(self, y) -> int:
        i = super()._add_class(y)
        if self.linear_ is not None:
            self.linear_.grow(self.linear_.n_features, self._out_width)
        return i

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        net = super()._proba(Z)
        lin = self.linear_
        if lin is None or lin.network_only() or Z.ndim != 2:
            return net
        return lin.blend(Z, net)

    def predict_proba_one(self, x: dict) -> dict:
        lin = self.linear_
        if lin is None or lin.network_only():
            return super().predict_proba_one(x)
        P = self._proba(self._scale(self.features_.row(x, grow=False))[None])[0]
        return dict(zip(self.classes_, P.tolist()))

    def _step(self):
        """Before the network's step: the hedge scores the predictions made on the new rows (the
        network's and the linear models', with the scaler as it was) and the linear models learn
        the rows; learn_many and learn_one take the same steps, so the same experts."""
        if self.linear_ is not None and self._pending and self.classes_:
            X, Y, W = self.buffer_.last(self._pending, copy=False)   # read before the step writes
            Z = self._scale(X)
            unit = self.buffer_.unit or bool((W == 1.0).all())
            self.linear_.learn(Z, self._prepare_targets(Y), super()._proba(Z), None if unit else W)
        super()._step()

    def _extra_state(self):
        s = {**super()._extra_state(), "linear": bool(self.linear)}
        if self.linear_ is not None:
            s["linear_experts"] = self.linear_.state_dict()
        return s

    def _load_extra_state(self, s):
        super()._load_extra_state(s)
        self.linear_ = None
        if self.linear and "linear_experts" in s:
            self.linear_ = LinearExperts.from_state(s["linear_experts"])
