"""Evaluation yardsticks of the field: NAB's scoring rules (`streamnn.evaluation.nab`) and the
naive forecasts (`streamnn.evaluation.naive`)."""

from .naive import LastValue, SeasonalNaive
from .nab import PROFILES, load_corpus, score_corpus

__all__ = ["PROFILES", "load_corpus", "score_corpus", "LastValue", "SeasonalNaive"]
