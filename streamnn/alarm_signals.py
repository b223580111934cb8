"""Evidence beside a model's raw score, for the alarm rules of `streamnn.alarms`.

- `RangeNovelty`: a value beyond the range of its feature's past values (scores 1.0 outright).
- `SeriesContext`: two extra raw scores of a single value stream, each judged by its own
  likelihood and fused with the model's (`Likelihood`, Fisher's method):

  1. **Change size**: log(|x_t - x_{t-1}| + eps), the error of the "same as last time" forecast,
     on a log scale so that the heavy tail of a bursty series does not dominate it.
  2. **Context novelty** (in the spirit of CAD OSE, a context-novelty detector on NAB): each value
     is cut to one of 2**bits coarse levels of the range seen so far; the score is the share of the
     patterns of the last 2..order levels that end with this value and were never seen before.
     A pattern never seen is evidence of a new behaviour that a small window cannot show, such as
     a daily rise that did not happen.

Everything is causal: each event is judged against past events only (`signals` is pure), then
added (`update`).

>>> ctx = SeriesContext()
>>> for i in range(2000):
...     ctx.update(float(i % 24 < 12))            # a square wave: its patterns repeat
>>> change, new = ctx.signals(1.0)                 # the wave goes on: nothing new
>>> new
0.0
>>> change, new = ctx.signals(0.5)                 # a level never seen: new patterns
>>> new > 0.5
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .alarm_level import LevelShift
from .alarm_season import Seasonal

__all__ = ["RangeNovelty", "SeriesContext", "series_for"]


class RangeNovelty:
    """Flags an event whose numeric feature leaves the range of that feature's past values by
    more than `tolerance` times the range (Numenta's "spatial anomaly" rule in NAB).

    >>> r = RangeNovelty()
    >>> for v in range(100):
    ...     r.update({"t": float(v % 10)})
    >>> r.novel({"t": 9.3}), r.novel({"t": 9.6}), r.novel({"t": -1.0})
    (False, True, True)
    """

    def __init__(self, tolerance: float = 0.05):
        self.tolerance = float(tolerance)
        self.lo: dict = {}
        self.hi: dict = {}

    def novel(self, x: dict) -> bool:
        lo, hi, tol = self.lo, self.hi, self.tolerance
        for k, v in x.items():
            if k in lo and isinstance(v, (int, float)):
                pad = tol * (hi[k] - lo[k])
                if v > hi[k] + pad or v < lo[k] - pad:
                    return True
        return False

    def update(self, x: dict) -> None:
        lo, hi = self.lo, self.hi
        for k, v in x.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1.7976931348623157e308:   # not NaN, inf, a huge int
                if k in lo:
                    if v < lo[k]:
                        lo[k] = v
                    elif v > hi[k]:
                        hi[k] = v
                else:
                    lo[k] = hi[k] = v

    def novel_many(self, names, V: np.ndarray) -> np.ndarray:
        """`novel` of each row of `V` (N, C) of finite floats (columns `names`), each judged against
        the range of the state and of the rows before it, as if `update` ran between rows; pure."""
        lo0 = np.array([self.lo.get(n, np.nan) for n in names], dtype=np.float64)
        hi0 = np.array([self.hi.get(n, np.nan) for n in names], dtype=np.float64)
        lo = np.fmin.accumulate(np.vstack([lo0, V[:-1]]), axis=0)                 # (N, C) past minimum
        hi = np.fmax.accumulate(np.vstack([hi0, V[:-1]]), axis=0)
        pad = self.tolerance * (hi - lo)
        return ((V > hi + pad) | (V < lo - pad)).any(axis=1)                     # NaN (unseen): False

    def update_many(self, names, V: np.ndarray) -> None:
        """`update` with each row of `V` (N, C) of finite floats (columns `names`), at once."""
        if not len(V):
            return
        for n, a, b in zip(names, V.min(axis=0).tolist(), V.max(axis=0).tolist()):
            if n in self.lo:
                self.lo[n], self.hi[n] = min(self.lo[n], a), max(self.hi[n], b)
            else:
                self.lo[n], self.hi[n] = a, b

    def state_dict(self) -> dict:
        return {"keys": list(self.lo), "lo": list(self.lo.values()), "hi": list(self.hi.values())}

    def load_state_dict(self, s: dict):
        self.lo, self.hi = dict(zip(s["keys"], s["lo"])), dict(zip(s["keys"], s["hi"]))


def series_for(context, where: str = "context"):
    """The `SeriesContext` that the alarm rules' `context` setting asks for, or None:

    - False: none (the model's error alone, with range novelty);
    - "change": the change size;
    - "level": the change size, the seasonal distance and the level shift (`streamnn.alarm_level`);
    - "season": the change size and the seasonal distance (`streamnn.alarm_season`);
    - True: the change size and the context novelty.
    """
    if context is False or context is None:
        return None
    if context is True:
        return SeriesContext(context=True)
    if context == "change":
        return SeriesContext(context=False)
    if context == "season":
        return SeriesContext(context=False, season=True)
    if context == "level":
        return SeriesContext(context=False, season=True, level=True)
    raise ValueError(f"{where}={context!r}: use 'level' (the change size, the seasonal distance and the "
                     "level shift), 'season' (the change size and the seasonal distance), 'change' (the "
                     "change size), True (the change size and context novelty) or False")


class SeriesContext:
    """Change size and context novelty of a single value stream (see the module docstring).

    Parameters
    ----------
    bits
        Coarse levels per value: 2**bits bins over the range seen so far.
    order
        Longest pattern of levels (patterns of 2..order values are looked up).
    context
        False: the change size only (`signals` gives a 1-tuple, `scores` one column).
    season
        True: the seasonal distance (`streamnn.alarm_season.Seasonal`) is one more signal.
    level
        True: the level shift (`streamnn.alarm_level.LevelShift`) is one more signal, last.
    """

    _EPS = 1e-9       # floor of a change, relative to the largest magnitude seen (log of a flat run)

    def __init__(self, bits: int = 2, order: int = 8, context: bool = True, season: bool = False,
                 level: bool = False):
        if bits < 1 or order < 2 or bits * order > 20:
            raise ValueError(f"bits={bits}, order={order}: need bits >= 1, order >= 2, bits * order <= 20")
        self.bits, self.order, self.context = int(bits), int(order), bool(context)
        self.season = Seasonal() if season else None
        self.level = LevelShift() if level else None
        self.width = 1 + self.context + bool(season) + bool(level)    # signals per event
        self._mask = (1 << (self.bits * self.order)) - 1
        self.last = math.nan          # the previous value
        self.lo, self.hi, self.amax = math.inf, -math.inf, 0.0
        self.code = 0                 # the last `order` levels, bits each, newest lowest
        self.length = 0               # levels in `code` (at most `order`)
        # patterns seen, as a flag per pattern (compact, no hashing): the pattern of the last k
        # levels, code c (k * bits bits), is flag base[k] + c
        self._base = [0, 0, 0]
        for k in range(2, self.order + 1):
            self._base.append(self._base[-1] + (1 << (self.bits * k)))
        self.seen = bytearray(self._base[-1])
        self._memo = None
        self._tables()

    def _tables(self):
        """The per-length (base, mask) pairs of the pattern flags, and the top level."""
        self._bm = [(self._base[k], (1 << (self.bits * k)) - 1) if k >= 2 else (0, 0) for k in range(self.order + 1)]
        self._top = (1 << self.bits) - 1

    def signals(self, v: float) -> tuple:
        """(log change size, share of new patterns, seasonal distance, level shift) of the next
        value `v`, as configured; NaN for a non-finite value (and the change of the first one);
        pure apart from a one-entry cache."""
        memo = self._memo
        if memo is not None and memo[0] == v:
            return memo[1]
        if v - v != 0.0:                                      # NaN or infinite
            return (math.nan,) * self.width
        last = self.last
        change = math.log(abs(v - last) + self._EPS * (1.0 + self.amax)) if last - last == 0.0 else math.nan
        if not self.context:
            out = (change,) + self._more(v)
            self._memo = (v, out, 0, 0, 0)
            return out
        r, top = self.hi - self.lo, self._top
        if r > 0.0:
            level = int((v - self.lo) / r * (top + 1))
            level = top if level > top else (0 if level < 0 else level)
        else:
            level = 0
        code = ((self.code << self.bits) | level) & self._mask
        length = self.length + 1 if self.length < self.order else self.order
        # `seen` holds every suffix (of length >= 2) of a pattern it holds: the new patterns are
        # those of length first..length, and `first` is found by bisection
        seen, bm = self.seen, self._bm
        first, top = 2, length + 1
        while first < top:
            k = (first + top) >> 1
            base, mask = bm[k]
            if seen[base + (code & mask)]:
                first = k + 1
            else:
                top = k
        out = (change, (length + 1 - first) / (self.order - 1)) + self._more(v)
        self._memo = (v, out, code, length, first)
        return out

    def _more(self, v: float) -> tuple:
        """The seasonal distance and the level shift of `v`, as configured."""
        out = (self.season.signal(v),) if self.season else ()
        return out + (self.level.signal(v),) if self.level else out

    def update(self, v: float) -> None:
        """Add the value `v` (non-finite values are skipped)."""
        if v - v != 0.0:
            return
        memo = self._memo
        if memo is None or memo[0] != v:
            self.signals(v)
            memo = self._memo
        self._memo = None
        if self.season:
            self.season.update(v)
        if self.level:
            self.level.update(v)
        if self.context:
            self.code = code = memo[2]
            self.length = length = memo[3]
            seen, bm = self.seen, self._bm
            for k in range(memo[4], length + 1):             # the patterns never seen before
                base, mask = bm[k]
                seen[base + (code & mask)] = 1
        self.last = v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        a = v if v >= 0.0 else -v
        if a > self.amax:
            self.amax = a

    def scores(self, values: np.ndarray, keep: bool = True) -> np.ndarray:
        """`signals` of each finite value of `values` (N,) in order, each value added after it is
        scored, vectorized: (N, width). `keep=False` leaves the state as it was (`score_many`)."""
        more = [s.scores(values, keep)[:, None] for s in (self.season, self.level) if s is not None]
        base = self._scores(values, keep)
        return np.concatenate([base] + more, axis=1) if more else base

    def _scores(self, values: np.ndarray, keep: bool) -> np.ndarray:
        """`scores` of the change size and context novelty."""
        v, N, bits, order = np.asarray(values, np.float64), len(values), self.bits, self.order
        if not N:
            return np.empty((0, 1 + self.context))
        a = np.abs(v)
        amax = np.maximum.accumulate(np.r_[self.amax, a[:-1]])                 # past largest magnitude
        prev = np.r_[self.last, v[:-1]]
        with np.errstate(invalid="ignore"):
            change = np.log(np.abs(v - prev) + self._EPS * (1.0 + amax))           # NaN at a first value
        if not self.context:
            if keep:
                self.last, self.amax = float(v[-1]), max(self.amax, float(a.max()))
                self.lo, self.hi, self._memo = min(self.lo, float(v.min())), max(self.hi, float(v.max())), None
            return change[:, None]
        lo = np.minimum.accumulate(np.r_[self.lo, v[:-1]])
        hi = np.maximum.accumulate(np.r_[self.hi, v[:-1]])
        r, B = hi - lo, 1 << bits
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            level = np.where(r > 0.0, np.trunc((v - lo) / np.where(r > 0.0, r, 1.0) * B), 0.0)
        level = np.clip(np.nan_to_num(level), 0, B - 1).astype(np.int64)
        past = [(self.code >> (bits * j)) & (B - 1) for j in range(order - 2, -1, -1)]   # oldest first
        L = np.concatenate([np.array(past, np.int64), level])
        win = np.lib.stride_tricks.sliding_window_view(L, order)                 # (N, order), newest last
        code = (win << (bits * np.arange(order - 1, -1, -1))).sum(axis=1)         # (N,)
        length = np.minimum(self.length + 1 + np.arange(N), order)
        ks = np.arange(2, order + 1)
        pats = np.array(self._base)[ks] + (code[:, None] & ((1 << (bits * ks)) - 1))   # (N, order - 1)
        valid = ks[None, :] <= length[:, None]
        flat = np.where(valid, pats, -1).ravel()
        uniq, first = np.unique(flat, return_index=True)
        first = first[uniq >= 0]
        flags = np.frombuffer(self.seen, np.uint8)
        fresh = np.zeros(flat.shape, bool)
        fresh[first[flags[flat[first]] == 0]] = True                              # first sight, never seen
        new = fresh.reshape(N, order - 1).sum(axis=1) / (order - 1)
        if keep:
            np.frombuffer(self.seen, np.uint8)[flat[fresh]] = 1
            self.last, self.amax = float(v[-1]), max(self.amax, float(a.max()))
            self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))
            self.code, self.length, self._memo = int(code[-1]), int(length[-1]), None
        return np.stack([change, new], axis=1)

    def state_dict(self) -> dict:
        return {"bits": self.bits, "order": self.order, "context": self.context, "last": self.last,
                "season": self.season.state_dict() if self.season else None, "lo": self.lo, "hi": self.hi,
                "level": self.level.state_dict() if self.level else None,
                "amax": self.amax, "code": self.code, "length": self.length,
                "seen": torch.from_numpy(np.flatnonzero(np.frombuffer(self.seen, np.uint8)))}

    def load_state_dict(self, s: dict):
        self.bits, self.order, self.context = s["bits"], s["order"], s.get("context", True)
        self.season = None
        if s.get("season") is not None:
            self.season = Seasonal()
            self.season.load_state_dict(s["season"])
        self.level = None                  # states written before the level shift have none
        if s.get("level") is not None:
            self.level = LevelShift()
            self.level.load_state_dict(s["level"])
        self.width = 1 + self.context + (self.season is not None) + (self.level is not None)
        self._mask = (1 << (self.bits * self.order)) - 1
        self.last, self.lo, self.hi, self.amax = s["last"], s["lo"], s["hi"], s["amax"]
        self.code, self.length = s["code"], s["length"]
        self._base = [0, 0, 0]
        for k in range(2, self.order + 1):
            self._base.append(self._base[-1] + (1 << (self.bits * k)))
        self.seen = bytearray(self._base[-1])
        np.frombuffer(self.seen, np.uint8)[s["seen"].numpy()] = 1
        self._memo = None
        self._tables()
