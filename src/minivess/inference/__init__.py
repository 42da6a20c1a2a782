"""Prediction of whole volumes with a trained model: the path every user-facing tool shares.

Example:
    >>> from minivess.inference import Predictor  # doctest: +SKIP
    >>> predictor = Predictor.from_source("runs/exp/checkpoints/best.pt")  # doctest: +SKIP
    >>> prediction = predictor.predict(read_volume("stack.tif"))  # doctest: +SKIP
    >>> prediction.mask.array.dtype, prediction.mask.affine is not None  # doctest: +SKIP
    (dtype('uint8'), True)
"""

from minivess.inference.batch import FolderPredictionError, FolderResult, predict_folder
from minivess.inference.predictor import ModelInfo, Prediction, Predictor, check_volume
from minivess.inference.runners import BACKENDS, Backend, OnnxRunner, Runner, TorchRunner
from minivess.inference.settings import PredictionSettings, Preprocessing
from minivess.inference.sources import is_mlflow_uri, load_source

__all__ = [
    "BACKENDS",
    "Backend",
    "FolderPredictionError",
    "FolderResult",
    "ModelInfo",
    "OnnxRunner",
    "Prediction",
    "PredictionSettings",
    "Predictor",
    "Preprocessing",
    "Runner",
    "TorchRunner",
    "check_volume",
    "is_mlflow_uri",
    "load_source",
    "predict_folder",
]
