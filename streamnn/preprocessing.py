"""`StreamingScaler`: the learners' input scaler as a river transformer.

>>> from river import datasets
>>> scaler = StreamingScaler()
>>> for x, _ in datasets.TrumpApproval().take(100):
...     z = scaler.transform_one(x)      # past statistics only
...     scaler.learn_one(x)
>>> abs(scaler.transform_one(x)["ordinal_date"]) < 3
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from river import base

from .features import FeatureRegistry
from .normalization import RunningStats

__all__ = ["StreamingScaler"]


class StreamingScaler(base.MiniBatchTransformer):
    """Standardize features with running statistics; missing values become 0 (the mean).

    Parameters
    ----------
    mode
        "welford" (exact running mean and variance) or "ewm" (exponentially weighted, follows drift).
    alpha
        Weight of a new sample in "ewm" mode.
    """

    def __init__(self, mode: str = "welford", alpha: float = 0.001):
        self.mode = mode
        self.alpha = alpha
        self.features_ = FeatureRegistry()
        self.stats_ = RunningStats(mode=mode, alpha=alpha)

    def learn_one(self, x: dict) -> None:
        self.stats_.update(self.features_.row(x)[None, :])

    def transform_one(self, x: dict) -> dict:
        if not x:
            return {}
        row = self.features_.row(x, grow=False)
        z = self.stats_.transform(row[None, :])[0] if len(self.stats_) else np.zeros(len(row))
        index = self.features_.index
        out = {}
        for k, v in x.items():
            col = index.get(k)
            out[k] = float(z[col]) if col is not None and col < len(z) else 0.0
        return out

    def learn_many(self, X: pd.DataFrame) -> None:
        self.stats_.update(self.features_.frame(X))

    def transform_many(self, X: pd.DataFrame) -> pd.DataFrame:
        M = self.features_.frame(X, grow=False)
        Z = self.stats_.transform(M) if len(self.stats_) else np.zeros_like(M)
        cols = [self.features_.index.get(k) for k in X.columns]
        data = {k: (Z[:, c] if c is not None and c < Z.shape[1] else np.zeros(len(X))) for k, c in zip(X.columns, cols)}
        return pd.DataFrame(data, index=X.index)

    def state_dict(self) -> dict:
        return {"features": self.features_.state_dict(), "stats": self.stats_.state_dict()}

    def load_state_dict(self, s: dict):
        self.features_.load_state_dict(s["features"])
        self.stats_.load_state_dict(s["stats"])
        return self
