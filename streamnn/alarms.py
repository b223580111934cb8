"""Alarms a person can act on: anomaly likelihood, alarm suppression and model protection.

A raw anomaly score (a reconstruction error, a HalfSpaceTrees mass) has no fixed scale and
fires in bursts: one incident lifts many neighbouring points. `Likelihood` turns it into a
score in [0, 1] whose high values are rare and early, in the spirit of Numenta's anomaly
likelihood (Ahmad et al. 2017):

1. **Short against long.** The mean of the last `short` raw scores is judged against the mean
   and standard deviation of those short means over the last `long` events (past only): a
   Gaussian tail probability `p`, log-scaled, `u = -log10(p)`, to `score = u / 10` up to
   `u = 5` and `1 - 2.5 / u` beyond (so 0.5 means `p = 1e-5`, and the score never saturates).
   During the first `learning` events the score is provisional: judged against what has been
   seen so far and capped at `quiet`, so it ranks events but raises no alarm. For a time
   series `short` = 10 smooths the raw scores; for independent records use `short=1, suppress=0`.
2. **Suppression.** After an alarm (score >= `alarm`), the next `suppress` events are scored at
   most `quiet` (below the alarm level): one incident raises one alarm, not a hundred.
3. **Protection.** A wrapped model does not learn an alarm and the first few events after it
   (`protects(k)`), so one incident does not teach the model that it is normal; a lasting change
   of regime is learned after that.
4. **Range novelty** (optional, `RangeNovelty`): a value beyond the range of its feature's past
   values by more than 5 % of that range scores 1.0 (Numenta's "spatial anomaly" rule).
5. **More evidence** (optional, `extra` raw scores such as `alarm_signals.SeriesContext`'s): each
   is judged by its own short-against-long tail, and the tails are fused by Fisher's method
   (the product of the p-values), so one noisy signal alone rarely raises an alarm. A signal
   with nothing to say on an event (NaN: e.g. the seasonal distance of a series with no period)
   is left out of the fusion rather than counted as "no evidence".

`AnomalyLikelihood(detector)` wraps any river `AnomalyDetector` with these rules.

>>> import random
>>> rng = random.Random(1)
>>> lk = Likelihood()
>>> normal = [lk.update(abs(rng.gauss(0, 1)))[0] for _ in range(3000)]
>>> sum(s >= 0.5 for s in normal[500:])        # no alarm on normal noise
0
>>> scores = [lk.update(8.0)[0] for _ in range(30)]
>>> max(scores) >= 0.5, sum(s >= 0.5 for s in scores)   # a burst: one alarm
(True, 1)
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import deque

import numpy as np
import torch

from .alarm_signals import RangeNovelty
from .alarm_stats import _log10_tail, _log10_tail_many, fisher, fisher_many

__all__ = ["Likelihood", "RangeNovelty", "AnomalyLikelihood", "fisher", "fisher_many"]


def _floats(v) -> list:
    """A saved sequence of floats (a float64 tensor, or a list in older checkpoints) as a list."""
    return v.tolist() if torch.is_tensor(v) else list(v)


class _Tail:
    """One raw stream: the mean of its last `short` values against the mean and standard deviation
    of those short means over the last `long` events, in O(1) per event (running sums)."""

    __slots__ = ("short", "long", "recent", "means", "s_recent", "s1", "s2")

    def __init__(self, short: int, long: int):
        self.short, self.long = short, long
        self.recent: deque = deque()          # last `short` raw scores
        self.means: deque = deque()           # last `long` short means
        self.s_recent = self.s1 = self.s2 = 0.0

    def u(self, raw: float, min_std: float) -> float:
        """-log10 of the Gaussian upper tail of the short mean with `raw`; NaN (no evidence)
        without history or for a raw score that is not finite."""
        k = len(self.means)
        if k < 2 or raw - raw != 0.0:                         # no history, or raw not finite
            return math.nan
        mu = self.s1 / k
        var = self.s2 / k - mu * mu
        sd = math.sqrt(var) if var > 0.0 else 0.0             # max(sd, min_std |mu|, 1e-12) as
        floor = min_std * (mu if mu >= 0.0 else -mu)          # comparisons (the same value as
        if floor > sd:                                        # `max`, without its call)
            sd = floor
        if 1e-12 > sd:
            sd = 1e-12
        recent = self.recent
        n = len(recent)
        m = (self.s_recent - recent[0] + raw) / n if n == self.short else (self.s_recent + raw) / (n + 1)
        return _log10_tail((m - mu) / sd)

    def add(self, raw: float):
        recent, means = self.recent, self.means
        n = len(recent)
        if n == self.short:
            old = recent.popleft()
            m = (self.s_recent - old + raw) / n
            self.s_recent -= old
        else:
            m = (self.s_recent + raw) / (n + 1)
        recent.append(raw)
        self.s_recent += raw
        if len(means) == self.long:
            old = means.popleft()
            self.s1 -= old
            self.s2 -= old * old
        means.append(m)
        self.s1 += m
        self.s2 += m * m

    def u_many(self, raw: np.ndarray, min_std: float) -> np.ndarray:
        """`u` of each finite raw score of `raw` (N,) in order, each added after it is scored, as N
        calls of `u` then `add` would (the running sums move by prefix sums: equal up to rounding)."""
        N, short, K0 = len(raw), self.short, len(self.means)
        if N <= 64 or not np.isfinite(raw).all():   # short stretches: the loop is cheaper
            return self.run(raw.tolist(), min_std)
        hist = np.fromiter(self.recent, np.float64, len(self.recent))
        allr = np.concatenate([hist, raw])
        if len(hist) == short:   # (N,) short means: sums of `short` values (no prefix-sum cancellation)
            m = np.lib.stride_tricks.sliding_window_view(allr[1:], short).sum(axis=1) / short
        else:                    # the stream's first events: means of what there is
            c = np.concatenate([[0.0], np.cumsum(allr)])
            p = len(hist) + np.arange(N)
            lo = np.maximum(0, p - short + 1)
            m = (c[p + 1] - c[lo]) / (p + 1 - lo)
        drop = np.arange(N) + K0 - self.long                          # index dropped by add j, if >= 0
        head = np.fromiter(itertools.islice(self.means, min(K0, N)), np.float64, min(K0, N))
        gone = np.where(drop >= 0, np.concatenate([head, m])[np.maximum(drop, 0)], 0.0)
        d1 = np.concatenate([[0.0], np.cumsum(m - gone)])[:N]        # sums before each row
        d2 = np.concatenate([[0.0], np.cumsum(m * m - gone * gone)])[:N]
        k = np.minimum(K0 + np.arange(N), self.long)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = (self.s1 + d1) / k
            var = (self.s2 + d2) / k - mu * mu
            sd = np.maximum(np.maximum(np.sqrt(np.maximum(var, 0.0)), min_std * np.abs(mu)), 1e-12)
            u = _log10_tail_many((m - mu) / sd)
        u[k < 2] = np.nan
        # the state after the N adds: the last `short` raw scores, the last `long` short means
        self.recent = deque(allr[-short:].tolist())
        keep = self.long - N                                          # old means that stay
        self.means = deque(itertools.chain(itertools.islice(self.means, max(0, K0 - keep), K0), m.tolist())
                           if keep > 0 else m[-self.long:].tolist())
        self.s_recent = math.fsum(self.recent)
        self.s1 += float(d1[-1] + (m[-1] - gone[-1]))
        self.s2 += float(d2[-1] + (m[-1] ** 2 - gone[-1] ** 2))
        return u

    def run(self, raws: list, min_std: float) -> np.ndarray:
        """`u` then `add` of each raw score (a non-finite one scores NaN and is not added)."""
        out, u, add, isfinite = np.full(len(raws), np.nan), self.u, self.add, math.isfinite
        for i, r in enumerate(raws):
            if isfinite(r):
                out[i] = u(r, min_std)
                add(r)
        return out

    def copy(self) -> "_Tail":
        twin = _Tail(self.short, self.long)
        twin.recent, twin.means = deque(self.recent), deque(self.means)
        twin.s_recent, twin.s1, twin.s2 = self.s_recent, self.s1, self.s2
        return twin

    def state_dict(self) -> dict:
        # float64 tensors, not lists: a checkpoint pickles a list's thousands of floats one by one
        return {"recent": torch.tensor(list(self.recent), dtype=torch.float64),
                "means": torch.tensor(list(self.means), dtype=torch.float64),
                "sums": [self.s_recent, self.s1, self.s2]}

    def load_state_dict(self, s: dict):   # lists: checkpoints written before session 9
        self.recent, self.means = deque(_floats(s["recent"])), deque(_floats(s["means"]))
        self.s_recent = math.fsum(self.recent)
        self.s1 = math.fsum(self.means)
        self.s2 = math.fsum(m * m for m in self.means)
        if "sums" in s:        # the running sums as they were: resuming is bit-exact
            self.s_recent, self.s1, self.s2 = s["sums"]


class Likelihood:
    """Online anomaly likelihood of a raw score stream (see the module docstring).

    Parameters
    ----------
    short
        Raw scores averaged into the short mean.
    long
        Short means forming the reference distribution.
    learning
        Events before the first alarm: until then the score is provisional, at most `quiet`.
    alarm
        Score at or above which an event is an alarm.
    suppress
        Events after an alarm whose score is capped at `quiet`.
    quiet
        The cap during suppression (keep it below `alarm`).
    min_std
        Floor of the reference standard deviation, relative to its mean (a flat raw stream
        must not turn a tiny blip into an alarm).

    `score` and `update` take optional `extra` raw scores (other evidence on the same event, e.g.
    `streamnn.alarm_signals.SeriesContext`): each gets its own short/long history, and the tail
    probabilities are fused by Fisher's method, so one noisy signal alone rarely raises an alarm.
    """

    def __init__(self, short: int = 10, long: int = 4000, learning: int = 300, alarm: float = 0.5,
                 suppress: int = 100, quiet: float = 0.4, min_std: float = 0.05):
        if not 1 <= short < long:
            raise ValueError(f"short={short}, long={long}: need 1 <= short < long")
        if not 0.0 <= quiet < alarm <= 1.0:
            raise ValueError(f"quiet={quiet}, alarm={alarm}: need 0 <= quiet < alarm <= 1")
        self.long, self.learning = int(long), int(learning)
        self.alarm, self.suppress, self.quiet, self.min_std = float(alarm), int(suppress), float(quiet), float(min_std)
        self.tails = [_Tail(int(short), self.long)]   # the raw score's, then one per extra signal
        self.n = 0                            # events seen
        self.hold = 0                         # events left in the suppression period
        self.since = 1 << 30                  # events since the last alarm (0: this one)
        self._memo = None                     # (raw, novel, extra, score) of the last `score`

    @property
    def short(self) -> int:
        return self.tails[0].short

    @short.setter
    def short(self, value: int):              # before any event only (the histories are empty)
        for t in self.tails:
            t.short = int(value)

    def fork(self) -> "Likelihood":
        """An independent copy, cheaply (the histories are copied as flat deques)."""
        twin = copy.copy(self)
        twin.tails, twin._memo = [t.copy() for t in self.tails], None
        return twin

    def protects(self, first: int) -> bool:
        """True during the first `first` events of an alarm's suppression period (the alarm
        included): a wrapped model should not learn them."""
        return self.since < first

    def _tails(self, n: int) -> list:
        if len(self.tails) >= n:
            return self.tails
        while len(self.tails) < n:
            self.tails.append(_Tail(self.tails[0].short, self.long))
        return self.tails

    def score(self, raw: float, novel: bool = False, extra: tuple = ()) -> float:
        """The score of the next event with raw score `raw` (`novel`: it left the range of its
        past values, see `RangeNovelty`, which scores 1.0; `extra`: other raw scores of the event);
        pure (apart from a one-entry cache)."""
        memo = self._memo
        if memo is not None and memo[0] == raw and memo[1] == novel and memo[2] == extra:
            return memo[3]
        raw = float(raw)
        if len(self.tails[0].means) < 2 or not math.isfinite(raw):
            s = 0.0
        elif novel:
            s = self.quiet if self.hold > 0 or self.n < self.learning else 1.0
        else:
            min_std, tails = self.min_std, self.tails
            u = tails[0].u(raw, min_std)
            if extra:
                if len(tails) <= len(extra):
                    tails = self._tails(len(extra) + 1)
                u = fisher((u, *map(_Tail.u, tails[1:], extra, itertools.repeat(min_std))))
            s = u / 10.0 if u <= 5.0 else 1.0 - 2.5 / u         # _scale(u), inlined
            if (self.hold > 0 or self.n < self.learning) and s > self.quiet:
                s = self.quiet
        self._memo = (raw, novel, extra, s)
        return s

    def update(self, raw: float, novel: bool = False, extra: tuple = ()) -> tuple[float, bool]:
        """Score `raw`, then add it (and `extra`) to the history in O(1); returns (score, alarm)."""
        memo = self._memo                                       # `score`'s cache, checked without the call
        hit = memo is not None and memo[0] == raw and memo[1] == novel and memo[2] == extra
        s = memo[3] if hit else self.score(raw, novel, extra)
        self._memo = None
        alarm = s >= self.alarm
        raw = float(raw)
        if math.isfinite(raw):
            self.tails[0].add(raw)
            if extra:
                tails = self.tails if len(self.tails) > len(extra) else self._tails(len(extra) + 1)
                for i, e in enumerate(extra, 1):
                    if e - e == 0.0:                            # finite
                        tails[i].add(e)
            self.n += 1
        if alarm:
            self.hold, self.since = self.suppress, 0
        else:
            self.hold = self.hold - 1 if self.hold > 0 else 0
            self.since += 1
        return s, alarm

    def extra_u(self, extra: np.ndarray) -> np.ndarray:
        """-log10 tails (N, k) of the extra raw scores `extra` (N, k) of the next N events, each
        added after it is scored; for `update_many(..., extra_u=)` (the extra evidence does not
        depend on the model, so a frame's can be judged at once)."""
        k = extra.shape[1]
        tails = self._tails(1 + k)[1:1 + k]   # as `score` pairs them (fewer signals than before: the first k)
        return np.stack([t.u_many(extra[:, j], self.min_std) for j, t in enumerate(tails)], axis=1)

    def update_many(self, raw: np.ndarray, novel: np.ndarray, extra: np.ndarray | None = None,
                    extra_u: np.ndarray | None = None):
        """`update` of each row in order, vectorized apart from the suppression rule: `raw` (N,),
        `novel` (N,) bools, `extra` (N, k) raw extra scores or `extra_u` (N, k) their `extra_u`.
        Returns (scores (N,), `since` after each row). The same as a loop of `update` up to
        rounding (the tails' sums move by prefix sums), except that with `extra_u` the extra
        histories have moved on even for an event whose `raw` is not finite."""
        N, ok = len(raw), np.isfinite(raw)
        if extra is not None:   # an event with a non-finite raw score adds no evidence
            extra_u = self.extra_u(extra if ok.all() else np.where(ok[:, None], extra, np.nan))
        tails, min_std = self.tails, self.min_std
        before = np.cumsum(ok) - ok                                   # finite events before each row
        ready = (ok & (len(tails[0].means) + before >= 2)).tolist()
        early = (self.n + before < self.learning).tolist()        # provisional: capped at `quiet`
        u = tails[0].u_many(raw, min_std)
        if extra_u is not None:
            u = fisher_many([u] + list(extra_u.T))
        s = np.where(u <= 5.0, u / 10.0, 1.0 - 2.5 / np.maximum(u, 5.0)).tolist()
        self.n += int(ok.sum())
        scores, since = np.empty(N), np.empty(N, np.int64)
        hold, last, alarm, quiet, suppress = self.hold, self.since, self.alarm, self.quiet, self.suppress
        for j, (v, ok, nv, e) in enumerate(zip(s, ready, novel.tolist(), early)):
            if not ok:
                v = 0.0
            elif nv:
                v = quiet if hold > 0 or e else 1.0
            elif (hold > 0 or e) and v > quiet:
                v = quiet
            if v >= alarm:
                hold, last = suppress, 0
            else:
                hold = hold - 1 if hold > 0 else 0
                last += 1
            scores[j], since[j] = v, last
        self.hold, self.since, self._memo = hold, last, None
        return scores, since

    def state_dict(self) -> dict:
        return {**self.tails[0].state_dict(), "n": self.n, "hold": self.hold, "since": self.since,
                "short": self.short, "suppress": self.suppress,
                "extra": [t.state_dict() for t in self.tails[1:]]}

    def load_state_dict(self, s: dict):
        self._memo = None
        self.tails = self.tails[:1]
        self.tails[0].load_state_dict(s)
        self.n, self.hold, self.since = s["n"], s["hold"], s["since"]
        self.short, self.suppress = s.get("short", self.short), s.get("suppress", self.suppress)
        for e in s.get("extra", []):
            self._tails(len(self.tails) + 1)[-1].load_state_dict(e)


from .alarm_wrapper import AnomalyLikelihood  # noqa: E402  (re-exported: it builds on Likelihood)
