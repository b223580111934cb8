"""Level-shift evidence for the alarm rules: has the series moved away from its recent level?

A slow drift or a new level that builds up over dozens of events hardly changes any one window of
the last few values, so a small network's reconstruction error and the size of each change stay
ordinary. A two-window test sees it: `LevelShift` scores each value by how far the mean of the last
`short` values (this one included) lies from the mean of the `long` values before them, in units of
the standard deviation of those `long` values (a z statistic of the recent mean). The score is a
raw signal for `streamnn.alarms.Likelihood` (judged by its own short-against-long tail, fused with
the model's error by Fisher's method): a series that always wanders has large values all the time
and a high yardstick, a steady one that leaves its level stands out. NaN until `short + min_long`
values have been seen.

A standard deviation under 1e-6 of the largest magnitude seen counts as that (a flat series).
Values near the float limit (squares that overflow) give NaN or inf signals, which the alarm rules
leave out.

Everything is causal: each value is judged against past values only (`signal` is pure), then
added (`update`). `scores` does the same for a frame of values (a loop: O(1) a value).

>>> import math
>>> ls = LevelShift()
>>> for i in range(1000):
...     ls.update(math.sin(i / 5.0))                     # wanders around 0
>>> ls.signal(math.sin(1000 / 5.0)) < 1.0
True
>>> for i in range(1000, 1029):
...     ls.update(3.0)                                   # a new level
>>> ls.signal(3.0) > 3.0
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LevelShift"]


class LevelShift:
    """The z statistic of the recent mean against the level before it (see the module docstring).

    Parameters
    ----------
    short
        Values in the recent mean (the value judged included).
    long
        Values before them that give the level and its spread.
    min_long
        Fewest values of the level before the first score.

    The windows' sums move in O(1) per value, taken about a centre near the level (so that a series
    far from zero loses no precision to cancellation) and recomputed exactly every `long` values.
    """

    _EPS = 1e-6       # floor of the spread, relative to the largest magnitude seen

    def __init__(self, short: int = 30, long: int = 600, min_long: int = 100):
        if not 1 <= short or not 2 <= min_long <= long:
            raise ValueError(f"short={short}, long={long}, min_long={min_long}: need short >= 1, "
                             "2 <= min_long <= long")
        self.short, self.long, self.min_long = int(short), int(long), int(min_long)
        self.cap = self.short + self.long          # values kept: the windows and the one leaving
        self.ring = [0.0] * self.cap               # value i (0-based, finite values only) at ring[i % cap]
        self.n = 0                                 # values added
        self.amax = 0.0                            # largest magnitude seen
        self.c = 0.0                               # the centre of the sums
        self.sr = 0.0                              # sum of the last short - 1 values, less c
        self.sl = self.ql = 0.0                    # sum and sum of squares of the level's values, less c

    def signal(self, v: float) -> float:
        """The z statistic of the next value `v`; NaN for a value that is not finite or before
        `short + min_long` values. Pure."""
        n, short = self.n, self.short
        if v - v != 0.0 or n + 1 < short + self.min_long:
            return math.nan
        count = n + 1 - short
        if count > self.long:
            count = self.long
        m = self.sl / count
        var = self.ql / count - m * m
        sd = math.sqrt(var) if var > 0.0 else 0.0
        floor = self._EPS * self.amax
        if floor < 1e-300:
            floor = 1e-300
        d = (self.sr + (v - self.c)) / short - m
        return (d if d >= 0.0 else -d) / (sd if sd > floor else floor)

    def update(self, v: float) -> None:
        """Add the value `v` (non-finite values are skipped): it joins the recent values, the
        oldest of those joins the level, the level's oldest leaves."""
        if v - v != 0.0:
            return
        n, c, ring, cap = self.n, self.c, self.ring, self.cap
        if n == 0:                                 # the first value is the first centre
            self.c = c = v
        ring[n % cap] = v
        self.sr += v - c
        j = n - self.short + 1                     # the value that leaves the recent ones
        if j >= 0:
            x = ring[j % cap] - c
            self.sr -= x
            self.sl += x
            self.ql += x * x
            o = j - self.long                      # the value that leaves the level
            if o >= 0:
                y = ring[o % cap] - c
                self.sl -= y
                self.ql -= y * y
        self.n = n = n + 1
        a = v if v >= 0.0 else -v
        if a > self.amax:
            self.amax = a
        if n % self.long == 0:
            self._recentre()

    def _recentre(self) -> None:
        """The sums again, exactly, about the level's mean (or the last value without a level)."""
        n, short, cap = self.n, self.short, self.cap
        vals = np.array([self.ring[i % cap] for i in range(max(0, n - short + 1 - self.long), n)])
        split = len(vals) - min(n, short - 1)
        level, recent = vals[:split], vals[split:]
        with np.errstate(over="ignore", invalid="ignore"):    # values near the float limit: inf sums,
            self.c = c = float(level.mean()) if len(level) else float(vals[-1])   # NaN signals
            self.sr = float(np.sum(recent - c))
            self.sl = float(np.sum(level - c))
            self.ql = float(np.sum((level - c) ** 2))

    def scores(self, values: np.ndarray, keep: bool = True) -> np.ndarray:
        """`signal` of each value of `values` (N,) in order, each finite value added after it is
        scored (as `update` would: the same arithmetic); `keep=False` leaves the state as it was.
        A `keep=False` call then a `keep=True` call of the same values from the same state
        (score_many then learn_many of one frame) run the loop once."""
        v = np.asarray(values, np.float64)
        key = (self.n, self.c, self.sr, self.sl, self.ql, self.amax, v.tobytes())
        memo = self.__dict__.pop("_memo", None)
        if memo is not None and memo[0] == key:
            if keep:                                   # the state the loop reached, as it is
                self.__dict__.update(memo[2].__dict__)
                return memo[1]
            self._memo = memo
            return memo[1].copy()
        twin = self if keep else self._copy()
        out = np.full(len(v), np.nan)
        signal, update = twin.signal, twin.update
        for j, x in enumerate(v.tolist()):
            if x - x == 0.0:
                out[j] = signal(x)
                update(x)
        if not keep:
            self._memo = (key, out.copy(), twin)
        return out

    def _copy(self) -> "LevelShift":
        twin = LevelShift.__new__(LevelShift)
        twin.__dict__.update(self.__dict__)
        twin.__dict__.pop("_memo", None)
        twin.ring = list(self.ring)
        return twin

    def __getstate__(self):            # the memo is a cache: scoring leaves the pickled state as it was
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    def _last(self) -> list:
        n, cap = self.n, self.cap
        return [self.ring[i % cap] for i in range(max(0, n - cap), n)]

    def state_dict(self) -> dict:
        return {"short": self.short, "long": self.long, "min_long": self.min_long, "n": self.n,
                "amax": self.amax, "values": torch.tensor(self._last(), dtype=torch.float64),
                "sums": [self.c, self.sr, self.sl, self.ql]}

    def load_state_dict(self, s: dict):
        self.__init__(s["short"], s["long"], s["min_long"])
        vals = s["values"].numpy().tolist()
        n = int(s["n"])
        for i, x in enumerate(vals, n - len(vals)):
            self.ring[i % self.cap] = x
        self.n, self.amax = n, float(s["amax"])
        self.c, self.sr, self.sl, self.ql = s["sums"]          # as they were: resuming is bit-exact
