"""The p-value arithmetic of the alarm rules (`streamnn.alarms`): Gaussian tails as -log10 p,
their scale to [0, 1), and Fisher's method to fuse several signals' p-values.

>>> round(fisher([2.0, 2.0]), 2)                # two signals at p = 0.01 each: p = 0.001
2.99
>>> _scale(5.0), round(_scale(10.0), 2)        # 0.5 at p = 1e-5; never saturates
(0.5, 0.75)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fisher", "fisher_many"]

_LOG10 = math.log(10.0)


_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _log10_tail(z: float) -> float:
    """-log10 of the Gaussian upper tail probability P(Z > z), without underflow."""
    if z < 30.0:
        p = 0.5 * math.erfc(z / _SQRT2)
        return -math.log10(p if not 1e-300 > p else 1e-300)   # max(p, 1e-300), without its call
    return (0.5 * z * z + math.log(z * _SQRT_2PI)) / _LOG10


def _log10_tail_many(z: np.ndarray) -> np.ndarray:
    """`_log10_tail` of each element of `z` (the same rule, vectorized)."""
    from scipy.special import erfc
    out = np.empty_like(z)
    lo = z < 30.0
    out[lo] = -np.log10(np.maximum(0.5 * erfc(z[lo] / _SQRT2), 1e-300))
    hi = z[~lo]
    out[~lo] = (0.5 * hi * hi + np.log(hi * _SQRT_2PI)) / _LOG10
    return out


def _scale(u: float) -> float:
    """-log10(tail) -> [0, 1): u / 10 up to u = 5 (score 0.5 at a tail of 1e-5), then 1 - 2.5 / u
    (monotone, never saturating: a larger deviation always scores higher)."""
    return u / 10.0 if u <= 5.0 else 1.0 - 2.5 / u



def fisher(us) -> float:
    """Fisher's method on -log10 p-values: the -log10 p-value of their product, under independence
    (chi-squared with 2k degrees of freedom); one value is returned as it is. NaN values (a signal
    with no evidence on this event: no history yet, a series with no period) are left out, so they
    do not dilute the others."""
    t, k, first = 0.0, 0, 0.0                  # one pass: the sum and count of the defined ones
    for u in us:
        if u == u:
            if not k:
                first = u
            t += u
            k += 1
    if k == 1:
        return first
    t *= _LOG10
    acc = term = 1.0
    for i in range(1, k):
        term *= t / i
        acc += term
    v = (t - math.log(acc)) / _LOG10
    return v if v > 0.0 else 0.0


def fisher_many(us) -> np.ndarray:
    """`fisher` of each row of the columns `us` (k arrays (N,)), vectorized; NaN entries are left
    out of their row (each row uses its own count of defined values)."""
    if len(us) == 1:
        return us[0]
    U = np.asarray(us, dtype=np.float64)
    defined = ~np.isnan(U)
    k = defined.sum(axis=0)
    t = np.where(defined, U, 0.0).sum(axis=0) * _LOG10
    acc, term = np.ones_like(t), np.ones_like(t)
    for i in range(1, len(us)):
        term = term * t / i
        acc = acc + np.where(i < k, term, 0.0)
    out = np.maximum(0.0, (t - np.log(acc)) / _LOG10)
    one = k == 1                                  # one value: as it is (as `fisher` returns it)
    if one.any():
        out[one] = np.where(defined, U, 0.0).sum(axis=0)[one]
    out[k == 0] = 0.0                             # as `fisher` of nothing
    return out
