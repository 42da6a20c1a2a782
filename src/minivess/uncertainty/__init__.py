"""Calibrated probabilities and conformal uncertainty for vessel segmentation.

* :mod:`~minivess.uncertainty.metrics`: ECE, adaptive and class-balanced ECE, Brier score and
  reliability diagrams;
* :mod:`~minivess.uncertainty.calibration`: temperature scaling fitted with netcal;
* :mod:`~minivess.uncertainty.conformal`: false-negative-rate control and per-voxel prediction
  sets with MAPIE;
* :mod:`~minivess.uncertainty.head`: what a checkpoint stores and prediction applies.

netcal and MAPIE are imported only inside the fitting functions (netcal's import takes ~8 s).
"""

from minivess.uncertainty.calibration import TemperatureScaling, fit_temperature
from minivess.uncertainty.conformal import (
    FNRControl,
    PredictionSets,
    false_negative_rate,
    fit_fnr_control,
    fit_prediction_sets,
)
from minivess.uncertainty.head import EXTRA_KEY, UncertaintyHead, UncertaintyMaps
from minivess.uncertainty.metrics import CalibrationReport, calibration_metrics

__all__ = [
    "EXTRA_KEY",
    "CalibrationReport",
    "FNRControl",
    "PredictionSets",
    "TemperatureScaling",
    "UncertaintyHead",
    "UncertaintyMaps",
    "calibration_metrics",
    "false_negative_rate",
    "fit_fnr_control",
    "fit_prediction_sets",
    "fit_temperature",
]
