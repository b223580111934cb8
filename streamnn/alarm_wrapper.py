"""`AnomalyLikelihood`: any river anomaly detector behind the alarm rules of `streamnn.alarms`."""

from __future__ import annotations

from river import anomaly, base

from .alarm_signals import RangeNovelty, series_for
from .alarms import Likelihood

__all__ = ["AnomalyLikelihood"]


class AnomalyLikelihood(base.AnomalyDetector):
    """Wrap any river anomaly detector: its raw scores become a likelihood score with alarms.

    `score_one` returns the `Likelihood` score in [0, 1]; `predict_one` is True at an alarm;
    `learn_one` updates the likelihood and lets the detector learn, except an alarm and the
    `protect` - 1 events after it. `novelty`: the `RangeNovelty` tolerance (None: off); `context`:
    on a stream of events with one numeric feature, evidence about that value joins the raw
    score's (`streamnn.alarm_signals.series_for`: "level", the default, the change size, the
    seasonal distance and the level shift; "season" the first two; "change" the change size only; True the change size and context novelty;
    False off), as in `AutoencoderDetector`'s `alarm_params`; the other parameters are those of
    `Likelihood`.

    >>> from river import anomaly, preprocessing
    >>> model = AnomalyLikelihood(preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=0))
    >>> for i in range(600):
    ...     model.learn_one({"value": float(i % 10)})
    >>> model.score_one({"value": 3.0}) < 0.5
    True
    """

    def __init__(self, detector: base.Estimator | None = None, short: int = 10, long: int = 4000,
                 learning: int = 300, alarm: float = 0.5, suppress: int = 100, quiet: float = 0.4,
                 min_std: float = 0.05, novelty: float | None = 0.05, protect: int = 10,
                 context: bool | str = "level"):
        series = series_for(context)
        self.detector = detector
        self.short, self.long, self.learning, self.alarm = short, long, learning, alarm
        self.suppress, self.quiet, self.min_std, self.protect = suppress, quiet, min_std, protect
        self.novelty, self.context = novelty, context
        self.detector_ = detector.clone() if detector is not None else anomaly.HalfSpaceTrees()
        self.likelihood_ = Likelihood(short, long, learning, alarm, suppress, quiet, min_std)
        self.range_ = RangeNovelty(novelty) if novelty is not None else None
        self.series_ = series
        self._memo = None

    @property
    def _wrapped_model(self):
        return self.detector_

    @classmethod
    def _unit_test_params(cls):
        yield {"detector": anomaly.HalfSpaceTrees(seed=0), "learning": 20, "long": 100, "suppress": 10}

    def _raw(self, x: dict) -> float:
        key = (self.likelihood_.n, tuple(x.items()))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        raw = float(self.detector_.score_one(x))
        self._memo = (key, raw)
        return raw

    def _extra(self, x: dict) -> tuple:
        """The series evidence of `x` (one numeric feature), else ()."""
        if self.series_ is None or len(x) != 1:
            return ()
        (v,) = x.values()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return ()
        return self.series_.signals(float(v))

    def score_one(self, x: dict) -> float:
        return self.likelihood_.score(self._raw(x), self.range_ is not None and self.range_.novel(x), self._extra(x))

    def predict_one(self, x: dict) -> bool:
        return self.score_one(x) >= self.alarm

    def learn_one(self, x: dict) -> None:
        raw, extra = self._raw(x), self._extra(x)
        self.likelihood_.update(raw, self.range_ is not None and self.range_.novel(x), extra)
        if self.range_ is not None:
            self.range_.update(x)
        if extra:
            self.series_.update(float(next(iter(x.values()))))
        if not self.likelihood_.protects(self.protect):
            self.detector_.learn_one(x)
