"""The naive forecasts a forecaster is measured against (river's `time_series.base.Forecaster`
API): the last value, and the value one season back (seasonal naive).

>>> f = SeasonalNaive(3)
>>> for y in [1.0, 2.0, 3.0, 4.0]:
...     f.learn_one(y)
>>> f.forecast(4), LastValue().forecast(2)
([2.0, 3.0, 4.0, 2.0], [])
"""

from __future__ import annotations

__all__ = ["LastValue", "SeasonalNaive"]


class LastValue:
    """Forecasts the last value seen for every step (nothing before the first value)."""

    def learn_one(self, y, x=None):
        self.y = y

    def forecast(self, horizon, xs=None):
        return [self.y] * horizon if hasattr(self, "y") else []


class SeasonalNaive:
    """Forecasts the value `m` steps back (a whole number of seasons back beyond one season); the
    last value while fewer than `m` values were seen."""

    def __init__(self, m: int):
        self.m, self.ys = m, []

    def learn_one(self, y, x=None):
        self.ys.append(y)

    def forecast(self, horizon, xs=None):
        ys, m = self.ys, self.m
        if len(ys) < m:
            return [ys[-1]] * horizon if ys else []
        return [ys[len(ys) - m + (k % m)] for k in range(horizon)]
