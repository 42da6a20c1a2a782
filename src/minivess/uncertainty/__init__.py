"""Calibrated probabilities and conformal uncertainty for vessel segmentation.

* :mod:`~minivess.uncertainty.metrics`: ECE, adaptive and class-balanced ECE, Brier score and
  reliability diagrams;
* :mod:`~minivess.uncertainty.calibration`: Platt and temperature scaling fitted with netcal;
* :mod:`~minivess.uncertainty.conformal`: false-negative-rate control and per-voxel prediction
  sets with MAPIE;
* :mod:`~minivess.uncertainty.head`: what a checkpoint stores and prediction applies.

netcal and MAPIE are imported only inside the fitting functions (netcal's import takes ~8 s).
"""

from minivess.uncertainty.calibration import (
    Calibration,
    PlattScaling,
    TemperatureScaling,
    calibration_from_dict,
    fit_platt,
    fit_temperature,
)
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
    "Calibration",
    "CalibrationReport",
    "FNRControl",
    "PlattScaling",
    "PredictionSets",
    "TemperatureScaling",
    "UncertaintyHead",
    "UncertaintyMaps",
    "calibration_from_dict",
    "calibration_metrics",
    "false_negative_rate",
    "fit_fnr_control",
    "fit_platt",
    "fit_prediction_sets",
    "fit_temperature",
]
