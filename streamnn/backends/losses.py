"""Numpy losses: each gives the per-sample loss (B,) and its gradient with respect to the
network's output, and (`weigh`) scales that gradient by the sample weights of the batch.

`CrossEntropy` and `SquaredError` (on output column 0) are the single-output learners' losses;
`Members` wraps one of them for an ensemble trained as one network; `Reconstruction` is the
autoencoder's mean squared error against its own input; `MultiHead` the masked loss of several
heads (`streamnn.multioutput`). Torch's functions are the oracle (tests/test_backend_oracle.py).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOSSES", "loss_op", "softmax_ce", "CrossEntropy", "SquaredError", "Members", "Reconstruction", "MultiHead"]


class Loss:
    name = "loss"
    target_is_input = False    # the autoencoder: the target of a row is the row itself

    def weigh(self, g, W):
        """Gradient of the batch loss (the weighted mean of the per-sample losses)."""
        wts = (W / W.sum())[:, None] if W is not None else np.float64(1.0 / len(g))
        if g.dtype == np.float32 and g.ndim == 2:           # (g * wts).astype(float32), in place
            np.multiply(g, wts, out=g, dtype=np.float64, casting="same_kind")
            return g
        return (g * wts).astype(np.float32)

    def __repr__(self):
        return self.name


class CrossEntropy(Loss):
    name = "cross-entropy"

    def __call__(self, out, T):   # out (B, O) logits, T (B,) class indices
        per, g = softmax_ce(out, T)
        return per.astype(np.float64), g


def softmax_ce(z, T):
    """Cross-entropy of the logits `z` along axis 1 against the class indices `T` (B,): `z` is
    (B, O), or (B, O, K) for K members' logits (each member on its own loss). Returns the loss
    per sample (float32, (B,) or (B, K)) and its gradient softmax - one-hot (z's shape)."""
    m = _over_classes(np.maximum, z)                    # (B, 1, ...)
    e = np.exp(z - m)
    s = _over_classes(np.add, e)
    idx = T.astype(np.int64, copy=False)
    rows = np.arange(len(z))
    per = np.log(s[:, 0]) + m[:, 0] - z[rows, idx]
    g = np.divide(e, s, out=e)
    g[rows, idx] -= 1.0                                 # d(loss_i)/d(logits_i)
    return per, g


def _over_classes(ufunc, a):
    """`ufunc.reduce(a, axis=1, keepdims=True)` with the same result and fewer passes: two classes
    without a reduction; a few classes of (B, O, K) one class after another, the order in which
    numpy reduces that (strided) axis (a (B, O) row is reduced in numpy's own, pairwise, order)."""
    O = a.shape[1]
    if O == 2:
        return ufunc(a[:, :1], a[:, 1:])
    if a.ndim == 2 or not 2 < O <= 8:
        return ufunc.reduce(a, axis=1, keepdims=True)
    r = ufunc(a[:, :1], a[:, 1:2])
    for o in range(2, O):
        ufunc(r, a[:, o:o + 1], out=r)
    return r


class SquaredError(Loss):
    name = "squared error"

    def __call__(self, out, T):   # out (B, O) (column 0 is the prediction), T (B,)
        B = len(out)
        diff = out[:, 0] - T
        if out.shape[1] == 1 and diff.dtype == out.dtype:
            g = (2.0 * diff).reshape(B, 1)
        else:
            g = np.zeros_like(out)
            g[:, 0] = 2.0 * diff
        return np.square(diff, dtype=np.float64), g


class Members(Loss):
    """The loss of `members` networks, each on its own outputs: `out` (B, O * K) output-major;
    per-sample loss = the members' mean, and its gradient (B, O * K)."""

    def __init__(self, base: Loss, members: int):
        self.base, self.members = base, members
        self.name = f"{base.name} x {members} members"

    def __call__(self, out, T):
        B, K = len(out), self.members
        z = out.reshape(B, -1, K)                            # (B, O, K)
        if isinstance(self.base, CrossEntropy):
            per, g = softmax_ce(z, T)
            per = per.astype(np.float64)
        else:
            diff = z[:, 0] - T[:, None].astype(z.dtype)      # (B, K)
            per = np.square(diff, dtype=np.float64)
            g = np.zeros_like(z)
            g[:, 0] = 2.0 * diff
        per = np.add.reduce(per, 1) / K                      # the members' mean (np.mean's operations)
        g /= np.float32(K)
        return per, g.reshape(B, -1)


class Reconstruction(Loss):
    """Mean squared error of a reconstruction against the input, per row."""

    name = "reconstruction MSE"
    target_is_input = True

    def __call__(self, out, X):   # out, X (B, D)
        diff = out - X                                       # (B, D)
        d64 = diff.astype(np.float64)
        d64 *= d64
        return np.add.reduce(d64, 1) / X.shape[1], diff     # the "gradient" is the residual

    def weigh(self, diff, W):
        B, D = diff.shape
        if W is None:
            return diff * np.float32(2.0 / (D * B))
        return diff * (2.0 / D * (W / W.sum())[:, None]).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))   # no overflow for large |z|


def _d(loss, d):
    """(per-element loss, its derivative) of a regression loss at residual d = out - target."""
    if loss == "mse":
        return d * d, 2.0 * d
    if loss in ("l1", "mae"):
        return np.abs(d), np.sign(d)
    a = np.abs(d)   # huber (delta 1) == smooth_l1 (beta 1)
    return np.where(a < 1.0, 0.5 * d * d, a - 0.5), np.clip(d, -1.0, 1.0)


class MultiHead(Loss):
    """The masked loss of several heads: `plan` = ([(kind, loss, slots, cols, weight)], norm), as
    `streamnn.multioutput` builds it; T (B, K) with NaN = missing."""

    name = "multi-head"
    SUPPORTED = ("mse", "l1", "mae", "huber", "smooth_l1", "bce")

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, out, T):
        plan, norm = self.plan
        mask = ~np.isnan(T)
        T0 = np.where(mask, T, 0.0).astype(out.dtype)
        per = np.zeros(len(out))
        g = np.zeros_like(out)
        for kind, loss, slots, cols, w in plan:
            o, m = out[:, cols], mask[:, slots]
            if kind == "cls":
                lo, gl = softmax_ce(o, T0[:, slots])
                per += w * m * lo
                g[:, cols] += (w * m)[:, None] * gl
                continue
            t = T0[:, slots]
            if loss == "bce":
                lo, gl = np.maximum(o, 0) - o * t + np.log1p(np.exp(-np.abs(o))), _sigmoid(o) - t
            else:
                lo, gl = _d(loss, o - t)
            per += (lo * m * w).sum(axis=1)
            g[:, cols] += gl * m * w
        return per / norm, g / norm


LOSSES = {"ce": CrossEntropy, "mse": SquaredError, "recon": Reconstruction}


def loss_op(loss, members: int = 1):
    """A loss op from a name ("ce", "mse", "recon") or an op; None for an unknown name."""
    if isinstance(loss, Loss):
        op = loss
    elif loss in LOSSES:
        op = LOSSES[loss]()
    else:
        return None
    return Members(op, members) if members > 1 and isinstance(op, (CrossEntropy, SquaredError)) else op
