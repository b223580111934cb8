"""Evaluation yardsticks of the field: NAB's scoring rules (`streamnn.evaluation.nab`)."""

from .nab import PROFILES, load_corpus, score_corpus

__all__ = ["PROFILES", "load_corpus", "score_corpus"]
