"""streamnn: online deep learning on live streams.

River-compatible PyTorch learners (`learn_one`, `predict_one`, `learn_many`, ...) with
mini-batch buffering, streaming normalization, plateau learning-rate control with drift re-warm,
and safe checkpoints; plus a crash-safe runtime for Kafka and replay streams.
"""

from . import preprocessing
from .alarms import AnomalyLikelihood
from .anomaly import AutoencoderDetector
from .base import TorchLearner, load
from .calibration import ScoreCalibrator
from .checkpoint import load_checkpoint, save_checkpoint
from .classification import MLPClassifier, TorchClassifier
from .forecasting import LSTMForecaster, MLPForecaster
from .lr import PageHinkley, PlateauLR, StreamLR
from .modules import MLP
from .multioutput import MultiHeadLearner, MultiLabelClassifier, MultiTargetRegressor
from .normalization import RunningStats, StreamingNorm
from .regression import MLPRegressor, TorchRegressor
from .sequence import LSTMClassifier, LSTMRegressor
from .threads import set_threads

__version__ = "0.1.0"

__all__ = [
    "AnomalyLikelihood", "AutoencoderDetector", "ScoreCalibrator",    "LSTMClassifier", "LSTMForecaster", "LSTMRegressor", "MLP", "MLPClassifier", "MLPForecaster", "MLPRegressor", "MultiHeadLearner", "MultiLabelClassifier",
    "MultiTargetRegressor", "PageHinkley", "PlateauLR", "RunningStats", "StreamLR",
    "StreamingNorm", "TorchClassifier", "TorchLearner", "TorchRegressor", "load",
    "load_checkpoint", "preprocessing", "save_checkpoint", "set_threads",
]
