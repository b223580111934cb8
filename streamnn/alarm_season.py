"""Seasonal evidence for the alarm rules: is this value unlike the values one, two and three
periods back?

Many sensor series repeat a daily or weekly pattern. A window of the last few values cannot tell
that a daily rise did not happen or came at the wrong hour, but the same hour of the previous days
can. `Seasonal` finds the series' period from the autocorrelation of its recent past (recomputed
every `every` values; none when the series does not repeat) and scores each value by the log of
its distance to the nearest of the values about 1, 2 and 3 periods back (within `jitter` events
of the same phase): small for a day like the previous ones, large for a day unlike all of them.
Distances under 0.1 % of the largest magnitude seen count as equal (the log of an exact repeat
would otherwise be an outlier far below every other distance, and widen the yardstick that the
likelihood judges this signal by).
The score is a raw signal for `streamnn.alarms.Likelihood` (judged by its own short-against-long
tail, fused with the model's error by Fisher's method); NaN while no period is known.

Everything is causal: each value is judged against past values only (`signal` is pure), then
added (`update`). `scores` does the same for a frame of values at once.

>>> import math
>>> s = Seasonal()
>>> for i in range(2000):
...     s.update(float(i % 50 < 20))                  # a square wave of period 50
>>> s.period
50
>>> s.signal(float(2000 % 50 < 20)) < -5              # the pattern goes on: about zero distance
True
>>> s.signal(0.5) > -1                                 # a value unlike the same phase before
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["Seasonal", "find_period"]


def find_period(h: np.ndarray, min_lag: int = 8, min_acf: float = 0.3) -> int:
    """The dominant period of the values `h` (oldest first): the lag, after the autocorrelation
    first turns negative and below len(h) / 2, of the highest autocorrelation, if that is at least
    `min_acf`; else 0 (no period).

    >>> find_period(np.sin(np.arange(1000) * 2 * np.pi / 24))
    24
    >>> find_period(np.random.default_rng(0).normal(size=1000))
    0
    """
    L = len(h)
    if L < 64:
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        f = np.fft.rfft(h - h.mean(), 2 * L)
        ac = np.fft.irfft(f.real * f.real + f.imag * f.imag, 2 * L)[:L]
    if not math.isfinite(ac[0]):                        # values near the float range overflow the
        s = float(np.abs(h).max())                      # squares: the same autocorrelation, scaled
        if not math.isfinite(s):                        # (a value that is not finite: no period)
            return 0
        return find_period(h / s, min_lag, min_acf)
    if not ac[0] > 0.0:                                 # a constant stretch
        return 0
    ac = ac / ac[0]
    hi = L // 2
    neg = np.flatnonzero(ac[:hi] < 0.0)
    if not len(neg):
        return 0
    start = max(min_lag, int(neg[0]))
    if start >= hi:
        return 0
    k = int(np.argmax(ac[start:hi])) + start
    return k if ac[k] >= min_acf else 0


class Seasonal:
    """Seasonal distance of a single value stream (see the module docstring).

    Parameters
    ----------
    periods
        Periods back to compare with (the nearest value counts: one unusual day in the past does
        not make today look unusual).
    jitter
        Events either side of the same phase (a pattern that comes a little early or late).
    min_lag
        Shortest period considered.
    acf_window
        Values the autocorrelation is computed over (periods up to half of it are found).
    every
        Values between two estimates of the period.
    min_acf
        Autocorrelation at the period below which the series is taken as not periodic.
    """

    _EPS = 1e-3       # floor of a distance, relative to the largest magnitude seen: closer is equal

    def __init__(self, periods: int = 3, jitter: int = 2, min_lag: int = 8, acf_window: int = 4096,
                 every: int = 512, min_acf: float = 0.3):
        if periods < 1 or jitter < 0 or min_lag <= jitter or acf_window < 128 or every < 1:
            raise ValueError(f"periods={periods}, jitter={jitter}, min_lag={min_lag}, acf_window={acf_window}, "
                             f"every={every}: need periods >= 1, 0 <= jitter < min_lag, acf_window >= 128, every >= 1")
        self.periods, self.jitter, self.min_lag = int(periods), int(jitter), int(min_lag)
        self.acf_window, self.every, self.min_acf = int(acf_window), int(every), float(min_acf)
        self.cap = max(self.acf_window, self.periods * (self.acf_window // 2) + self.jitter + 1)   # values kept
        self.ring = [0.0] * self.cap      # value i (0-based, finite values only) at ring[i % cap]
        self.n = 0                        # values added
        self.period = 0                   # 0: none known
        self.amax = 0.0                   # largest magnitude seen

    def signal(self, v: float) -> float:
        """log(distance of `v` to the nearest value about 1..periods periods back); NaN when no
        period is known yet or `v` is not finite. Pure."""
        P, n = self.period, self.n
        if not P or v - v != 0.0 or n - P - self.jitter < 0:
            return math.nan
        ring, cap, jit = self.ring, self.cap, self.jitter
        width, near = 2 * jit + 1, []
        for k in range(1, self.periods + 1):
            lo = n - k * P - jit                              # values lo .. lo + 2 * jitter
            if lo < 0:
                break
            lo %= cap
            hi = lo + width
            near += ring[lo:hi] if hi <= cap else ring[lo:] + ring[:hi - cap]
        return math.log(min(map(abs, map(v.__sub__, near))) + self._EPS * (1.0 + self.amax))

    def update(self, v: float) -> None:
        """Add the value `v` (non-finite values are skipped); every `every` values, the period is
        estimated again."""
        if v - v != 0.0:
            return
        n = self.n
        self.ring[n % self.cap] = v
        self.n = n = n + 1
        a = v if v >= 0.0 else -v
        if a > self.amax:
            self.amax = a
        if n % self.every == 0:
            self.period = find_period(self._last(min(n, self.acf_window)), self.min_lag, self.min_acf)

    def _last(self, m: int) -> np.ndarray:
        """The last `m` values, oldest first."""
        n, cap = self.n, self.cap
        lo, hi = (n - m) % cap, n % cap
        if m == 0:
            return np.empty(0)
        if lo < hi:
            return np.array(self.ring[lo:hi], dtype=np.float64)
        return np.array(self.ring[lo:] + self.ring[:hi], dtype=np.float64)

    def scores(self, values: np.ndarray, keep: bool = True) -> np.ndarray:
        """`signal` of each value of `values` (N,) in order, each finite value added after it is
        scored (as `update` would), vectorized; `keep=False` leaves the state as it was."""
        v = np.asarray(values, np.float64)
        N = len(v)
        out = np.full(N, np.nan)
        if not N:
            return out
        fin = np.isfinite(v)
        fv = v[fin]                                           # the values the state takes
        M = len(fv)
        n0 = self.n
        hist = self._last(min(n0, self.cap))
        allv = np.concatenate([hist, fv])                     # global value g at allv[g - off]
        off = n0 - len(hist)
        # the period in force before each new value j (global index n0 + j), and the estimates
        # made after the values whose count is a multiple of `every`
        P = np.empty(M, np.int64)
        cur, j = self.period, 0
        first = (n0 // self.every + 1) * self.every            # the next count that re-estimates
        for count in range(first, n0 + M + 1, self.every):
            P[j:count - n0] = cur
            j = count - n0
            h = allv[max(0, count - self.acf_window) - off:count - off]
            cur = find_period(h, self.min_lag, self.min_acf)
        P[j:] = cur
        amax = np.maximum.accumulate(np.r_[self.amax, np.abs(fv[:-1])]) if M else np.empty(0)
        g = n0 + np.arange(M)
        best = np.full(M, np.inf)
        jit = self.jitter
        known = (P > 0) & (g - P - jit >= 0)                  # a period, and one period of values
        for k in range(1, self.periods + 1):
            a = g - k * P
            ok = (P > 0) & (a - jit >= 0)
            for d in range(-jit, jit + 1):
                idx = np.where(ok, a + d - off, 0)
                dist = np.abs(fv - allv[idx])
                best = np.where(ok & (dist < best), dist, best)
        with np.errstate(invalid="ignore", divide="ignore"):
            sig = np.log(best + self._EPS * (1.0 + amax))
        sig[~(known & np.isfinite(best))] = np.nan
        out[fin] = sig
        if keep and M:
            self._absorb(fv, cur)
        return out

    def _absorb(self, fv: np.ndarray, period: int) -> None:
        """Add the finite values `fv` at once; `period` is the estimate after the last of them."""
        n, cap, ring = self.n, self.cap, self.ring
        for i, x in enumerate(fv[-cap:].tolist(), n + max(0, len(fv) - cap)):
            ring[i % cap] = x
        self.n = n + len(fv)
        self.amax = max(self.amax, float(np.abs(fv).max()))
        self.period = period

    def state_dict(self) -> dict:
        return {"periods": self.periods, "jitter": self.jitter, "min_lag": self.min_lag,
                "acf_window": self.acf_window, "every": self.every, "min_acf": self.min_acf,
                "n": self.n, "period": self.period, "amax": self.amax,
                "values": torch.tensor(self._last(min(self.n, self.cap)), dtype=torch.float64)}

    def load_state_dict(self, s: dict):
        self.__init__(s["periods"], s["jitter"], s["min_lag"], s["acf_window"], s["every"], s["min_acf"])
        vals = s["values"].numpy().tolist()
        n = int(s["n"])
        for i, x in enumerate(vals, n - len(vals)):
            self.ring[i % self.cap] = x
        self.n, self.period, self.amax = n, int(s["period"]), float(s["amax"])
