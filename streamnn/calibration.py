"""Online calibration of raw anomaly scores: a score that keeps its meaning while a model learns.

A raw reconstruction error has no fixed scale: it is large while an autoencoder is untrained and
shrinks as it learns, so a fixed threshold on it raises a flood of alarms at first and almost none
later. `ScoreCalibrator` maps a raw score to where it falls among the scores of the last `window`
events, in three steps:

1. **Memory.** The reference is the last `window` scores, but while fewer than 2 * `window`
   were seen only the newer half is kept: the first scores come from an untrained model. (An
   optional fast level, `track`, divides scores by a running geometric mean of recent normal
   scores; it follows learning even faster, but also absorbs lasting anomalies, so it is off.)
2. **Censoring.** An event that raised an alarm enters the reference as *censored at the
   threshold*: it counts as "above the threshold" but its size is unknown. Leaving alarms out
   would bias the tail down (the threshold would then creep down to ~4 % alarms); keeping their
   sizes would let anomalies stretch it.
3. **Mapping.** `"tail"` (default): the empirical CDF up to the reference's `1 - tail` quantile
   `q`, and beyond it an exponential tail whose scale is estimated
   from the median excess over `q` (peaks-over-threshold as in SPOT, Siffer et al. 2017, with
   shape 0, but a robust fit: a few anomalies in the tail barely move a median).
   The score estimates P(score of a normal event < s): in [0, 1), continuous, without ties at the
   top, so a threshold of 0.99 flags about 1 % of normal events. `"rank"`: the plain empirical
   CDF (every score above the reference is 1). `"zscore"`: a robust z-score of log(score),
   (log s - median) / (1.4826 MAD), with a threshold around 3.

>>> import numpy as np
>>> cal = ScoreCalibrator(window=500, min_samples=20)
>>> for s in np.random.default_rng(0).exponential(1.0, 500):
...     cal.update(s)
>>> 0.3 < cal.transform(0.7) < 0.7        # about the median of Exp(1)
True
>>> cal.transform(10.0) > 0.999           # far in the fitted tail
True
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch

__all__ = ["ScoreCalibrator", "CALIBRATIONS", "default_threshold"]

CALIBRATIONS = ("tail", "rank", "zscore", None)
_DEFAULT_THRESHOLDS = {"tail": 0.99, "rank": 0.99, "zscore": 3.0}
_EPS = 1e-12
_BULK = 0.9        # events below this reference quantile move the level


def default_threshold(method) -> float | None:
    """The threshold used when none is given: 0.99 for "tail"/"rank", 3.0 for "zscore"."""
    return _DEFAULT_THRESHOLDS.get(method)


class ScoreCalibrator:
    """Map raw scores to calibrated ones, using the last `window` events as reference.

    Parameters
    ----------
    method
        "tail", "rank" or "zscore" (see the module docstring).
    window
        How many recent scores are kept (while fewer than 2 * window were seen, only the newer
        half: early scores come from a model that has since learned).
    min_samples
        Below this many reference scores, `transform` returns 0.0 (a grace period: no alarms).
    tail
        Fraction of the reference described by the exponential tail ("tail" method).
    refresh
        The tail fit / median / MAD are recomputed every `refresh` updates (they move slowly).
    track
        Weight of a new normal score in the running geometric mean that scores are divided by
        (0, the default, disables it).
    threshold
        The calibrated score of an alarm: where alarms are censored (default per method).
    """

    def __init__(self, method: str = "tail", window: int = 1000, min_samples: int = 50,
                 tail: float = 0.1, refresh: int = 16, track: float = 0.0,
                 threshold: float | None = None):
        if method not in ("tail", "rank", "zscore"):
            raise ValueError(f"method={method!r}: use 'tail', 'rank' or 'zscore'")
        if window < 2 or not 1 <= min_samples <= window:
            raise ValueError("need window >= 2 and 1 <= min_samples <= window")
        self.method, self.window, self.min_samples = method, int(window), int(min_samples)
        self.tail, self.refresh, self.track = float(tail), int(refresh), float(track)
        self.threshold = default_threshold(method) if threshold is None else float(threshold)
        self.ring = np.zeros(self.window)          # relative scores (censor points for alarms)
        self.censored = np.zeros(self.window, bool)
        self.head = self.n = self.since = self.seen = 0
        self.sorted: list = []                     # the uncensored relative scores, sorted
        self.cens_sum = 0.0                        # sum of the censor points in the window
        self.stats = (0.0, 1.0, 0.0)               # tail: (q, scale, cdf(q)); zscore: (median, scale, 0)
        self.log_level, self.n_level = 0.0, 0      # running mean of log(raw) of normal scores

    @property
    def ready(self) -> bool:
        return self.n >= self.min_samples

    @property
    def n_censored(self) -> int:
        return self.n - len(self.sorted)

    # -- updates ----------------------------------------------------------------------------

    def update(self, raw: float, alarm: bool = False) -> None:
        """Add the raw score of one event (`alarm`: it was flagged); NaN/inf are ignored."""
        raw = float(raw)
        if not math.isfinite(raw):
            return
        first = self.n_level == 0
        if first and self.track > 0 and not alarm:
            self._track(raw)                       # the first normal score sets the level
        rel = self._relative(raw)                  # relative to the level *before* this score
        censored = alarm and self.ready
        if censored:
            rel = min(rel, self._inverse(self.threshold))
        # the level follows the bulk only: a lasting anomaly (scores high but under the
        # threshold) must not raise it and so hide itself
        if self.track > 0 and not first and not alarm and (not self.ready or self._cdf(rel) < _BULK):
            self._track(raw)
        self._insert(rel, censored)

    def _track(self, raw: float):
        self.n_level += 1
        w = max(self.track, 1.0 / self.n_level)
        self.log_level += w * (math.log(max(raw, 0.0) + _EPS) - self.log_level)

    def _relative(self, raw: float) -> float:
        return raw / math.exp(self.log_level) if self.n_level else raw

    def _insert(self, rel: float, censored: bool):
        s, h = self.sorted, self.head
        if self.n == self.window:                  # drop the oldest
            self._drop(h)
        self.n += 1
        if censored:
            self.cens_sum += rel
        else:
            bisect.insort(s, rel)
        self.ring[h], self.censored[h] = rel, censored
        self.head = (h + 1) % self.window
        self.seen += 1
        while self.n > max(self.min_samples, self.seen // 2):   # young: forget the older half
            self._drop((self.head - self.n) % self.window)
        self.since += 1
        if self.since >= self.refresh or self.n == self.min_samples:
            self._refit()

    def _drop(self, i: int):
        if self.censored[i]:
            self.cens_sum -= float(self.ring[i])
        else:
            del self.sorted[bisect.bisect_left(self.sorted, self.ring[i])]
        self.n -= 1

    def _refit(self):
        self.since = 0
        s, n = self.sorted, self.n
        if not s:
            return
        if self.method == "zscore":
            logs = np.concatenate([np.log(np.asarray(s) + _EPS), np.full(self.n_censored, np.inf)])
            med = float(np.median(logs))
            mad = float(np.median(np.abs(logs - med)))
            self.stats = (med, 1.4826 * mad + 1e-9 if math.isfinite(mad) else 1.0, 0.0)
        elif self.method == "tail":
            k = min(len(s) - 1, max(0, math.ceil((1.0 - self.tail) * n) - 1))
            q = s[k]
            top = s[k + 1:]
            # the exponential tail's scale from the median excess over q (median of Exp(m) is
            # m ln 2): robust to a few anomalies in the tail, and censored alarms simply count
            # as large excesses; if alarms are over half the tail, the censored MLE instead
            top = s[k + 1:]
            n_tail = len(top) + self.n_censored
            j = (n_tail - 1) / 2.0
            if n_tail and j <= len(top) - 1:
                med = 0.5 * (top[math.floor(j)] + top[math.ceil(j)]) - q
                scale = med / math.log(2.0)
            else:
                excess = sum(top) - q * len(top) + max(0.0, self.cens_sum - q * self.n_censored)
                scale = excess / max(1, len(top))
            self.stats = (q, max(scale, 1e-6 * (s[-1] - s[0]), _EPS), self._cdf(q))

    # -- mapping ----------------------------------------------------------------------------

    def _cdf(self, rel: float) -> float:
        s = self.sorted
        return (bisect.bisect_left(s, rel) + bisect.bisect_right(s, rel)) / (2.0 * self.n)

    def _inverse(self, p: float) -> float:
        """The relative score whose calibrated score is `p` (a censor point)."""
        if self.method == "zscore":
            med, scale, _ = self.stats
            return math.exp(med + p * scale)
        s = self.sorted
        if self.method == "tail":
            q, m, cq = self.stats
            if p > cq:
                return q - m * math.log(max((1.0 - p) / max(1.0 - cq, _EPS), _EPS))
        return s[min(len(s) - 1, int(p * self.n))] if s else 0.0

    def transform(self, raw: float) -> float:
        """The calibrated score of one raw score (0.0 while not `ready`); pure."""
        raw = float(raw)
        if not self.ready or math.isnan(raw):
            return 0.0
        rel = self._relative(raw)
        if self.method == "zscore":
            med, scale, _ = self.stats
            return (math.log(max(rel, 0.0) + _EPS) - med) / scale
        if self.method == "tail":
            q, m, cq = self.stats
            if rel > q:
                return cq + (1.0 - cq) * -math.expm1(-(rel - q) / m)
        return self._cdf(rel)

    def transform_many(self, raw: np.ndarray) -> np.ndarray:
        """Vectorized `transform`."""
        raw = np.asarray(raw, dtype=np.float64)
        if not self.ready:
            return np.zeros(len(raw))
        bad = np.isnan(raw)
        rel = raw / math.exp(self.log_level) if self.n_level else raw
        if self.method == "zscore":
            med, scale, _ = self.stats
            out = (np.log(np.maximum(rel, 0.0) + _EPS) - med) / scale
        else:
            s = np.asarray(self.sorted)
            out = (np.searchsorted(s, rel, "left") + np.searchsorted(s, rel, "right")) / (2.0 * self.n)
            if self.method == "tail":
                q, m, cq = self.stats
                hi = rel > q
                out[hi] = cq + (1.0 - cq) * -np.expm1(-(rel[hi] - q) / m)
        out[bad] = 0.0
        return out

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"ring": torch.from_numpy(self.ring.copy()), "censored": torch.from_numpy(self.censored.copy()),
                "head": self.head, "n": self.n, "since": self.since, "seen": self.seen,
                "stats": [float(v) for v in self.stats], "log_level": float(self.log_level),
                "n_level": self.n_level, "cens_sum": float(self.cens_sum)}

    def load_state_dict(self, s: dict):
        self.ring = s["ring"].numpy().astype(np.float64).copy()
        self.censored = s["censored"].numpy().astype(bool).copy()
        self.window = len(self.ring)
        self.head, self.n, self.since, self.stats = s["head"], s["n"], s["since"], tuple(s["stats"])
        self.seen = s["seen"]
        self.log_level, self.n_level = s["log_level"], s["n_level"]
        valid = np.zeros(self.window, bool)
        valid[(self.head - self.n + np.arange(self.n)) % self.window] = True
        self.sorted = sorted(self.ring[valid & ~self.censored].tolist())
        self.cens_sum = s["cens_sum"]
