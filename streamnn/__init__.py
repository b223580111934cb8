"""streamnn: online deep learning on live streams.

River-compatible PyTorch learners (`learn_one`, `predict_one`, `learn_many`, ...) with
mini-batch buffering, streaming normalization, plateau learning-rate control with drift re-warm,
and safe checkpoints; plus a crash-safe runtime for Kafka and replay streams.

The names below are imported on first use (PEP 562), so that `streamnn run` can take its folder
locks and refuse a second instance before torch is loaded.

>>> import streamnn
>>> streamnn.MLPClassifier.__name__
'MLPClassifier'
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the submodule that defines it
_WHERE = {
    "AnomalyLikelihood": "alarms", "AutoencoderDetector": "anomaly", "TorchLearner": "base",
    "load": "base", "ScoreCalibrator": "calibration", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "MLPClassifier": "classification",
    "TorchClassifier": "classification", "LSTMForecaster": "forecasting",
    "MLPForecaster": "forecasting", "PageHinkley": "lr", "PlateauLR": "lr", "StreamLR": "lr",
    "MLP": "modules",
    "MultiHeadLearner": "multioutput", "MultiLabelClassifier": "multioutput",
    "MultiTargetRegressor": "multioutput", "RunningStats": "normalization",
    "StreamingNorm": "normalization", "MLPRegressor": "regression", "TorchRegressor": "regression",
    "LSTMClassifier": "sequence", "LSTMRegressor": "sequence", "set_threads": "threads",
}

__all__ = sorted([*_WHERE, "preprocessing"])


def __getattr__(name):
    if name == "preprocessing":
        return import_module(".preprocessing", __name__)
    if name in _WHERE:
        value = getattr(import_module("." + _WHERE[name], __name__), name)
        globals()[name] = value   # later look-ups skip this function
        return value
    raise AttributeError(f"module 'streamnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
