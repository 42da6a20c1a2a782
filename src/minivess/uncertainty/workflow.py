"""Fit calibration and conformal uncertainty for a model on labelled volumes, and report it.

Both steps work on full-depth crops of the volumes (:data:`~minivess.uncertainty.data.CROP`):
crops are the exchangeable units the guarantees speak about, and a random half of them is held
out so that the numbers reported (ECE after calibration, FNR of the conformal mask) are measured
on crops the fit never saw. What is stored is exactly what was measured: the fit on the other
half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from minivess.errors import ConfigError, DataError
from minivess.uncertainty.calibration import Calibration, Sampling, fit_platt, fit_temperature
from minivess.uncertainty.conformal import (
    FNRControl,
    PredictionSets,
    false_negative_rate,
    fit_fnr_control,
    fit_prediction_sets,
)
from minivess.uncertainty.data import ScoredVolume, crops_of, split_crops
from minivess.uncertainty.metrics import calibration_metrics, pooled, reliability_diagram
from minivess.uncertainty.validation import Crop

if TYPE_CHECKING:
    from matplotlib.figure import Figure


Method = Literal["platt", "temperature"]
"""Calibration map to fit: Platt scaling (slope and intercept) or temperature (slope only)."""
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted calibration, its held-out report and reliability diagram."""

    calibration: Calibration
    report: dict[str, Any]
    figure: Figure


@dataclass(frozen=True)
class ConformalFit:
    """A fitted FNR control and prediction sets, with what they achieved on held-out crops."""

    fnr_control: FNRControl
    prediction_sets: PredictionSets
    report: dict[str, Any]


def _halves(volumes: Sequence[ScoredVolume], seed: int) -> tuple[list[Crop], list[Crop]]:
    crops = crops_of(volumes)
    if len(crops) < 4:
        raise DataError(
            None,
            "calibration-set",
            f"only {len(crops)} crops with vessels in {len(volumes)} volume(s); at least 4 are "
            "needed to fit on half and report on the other half",
        )
    return split_crops(crops, seed=seed)


def calibrate(
    volumes: Sequence[ScoredVolume],
    *,
    method: Method = "platt",
    sampling: Sampling = "prevalence",
    seed: int = 0,
) -> CalibrationFit:
    """Fit a calibration on half of the volumes' crops; report before/after on the rest.

    Args:
        volumes: Labelled volumes with the model's uncalibrated P(vessel).
        method: ``"platt"`` or ``"temperature"``.
        sampling: ``"prevalence"`` or ``"balanced"`` fitting voxels (a balanced Platt fit is
            shifted back to the volumes' prior, see :func:`fit_platt`).
        seed: Seed of the crop split and voxel sampling.

    Raises:
        DataError: Too few crops with vessels.
        ConfigError: Unknown method or sampling.
    """
    if method not in METHODS or sampling not in get_args(Sampling):
        raise ConfigError(
            f"calibration method must be one of {', '.join(METHODS)} and sampling one of "
            f"{', '.join(get_args(Sampling))}; got {method!r}, {sampling!r}"
        )
    fit_on, held_out = _halves(volumes, seed)
    fit = fit_platt if method == "platt" else fit_temperature
    calibration = fit(
        [c.prob for c in fit_on], [c.label for c in fit_on], seed=seed, sampling=sampling
    )
    prob, label = pooled([c.prob for c in held_out]), pooled([c.label for c in held_out])
    calibrated = calibration.apply(prob)
    before, after = calibration_metrics(prob, label), calibration_metrics(calibrated, label)
    figure = reliability_diagram(
        {"before": (prob, label), "after": (calibrated, label)},
        reports={"before": before, "after": after},
        title=f"held-out crops ({len(held_out)}), {method} ({sampling} voxels)",
    )
    report = {
        "calibration_before": before.to_dict(),
        "calibration_after": after.to_dict(),
        "calibration_volumes": sorted({v.id for v in volumes}),
        "calibration_fit_crops": len(fit_on),
        "calibration_heldout_crops": len(held_out),
        "calibration_method": method,
        "calibration_argmax_moved": float(np.mean((calibrated > 0.5) != (prob > 0.5))),
    }
    return CalibrationFit(calibration, report, figure)


def conformalize(
    volumes: Sequence[ScoredVolume],
    *,
    alpha: float,
    set_alpha: float | None = None,
    calibration: Calibration | None = None,
    seed: int = 0,
) -> ConformalFit:
    """Fit FNR control and prediction sets on half the crops; measure them on the other half.

    Args:
        volumes: Labelled volumes with the model's uncalibrated P(vessel).
        alpha: Target expected FNR of the conformal mask.
        set_alpha: Miscoverage of the prediction sets (defaults to ``alpha``).
        calibration: The model's stored calibration, applied before anything is fitted (the
            cut-offs then apply to the calibrated probability, as prediction does).
        seed: Seed of the crop split and voxel sampling.

    Raises:
        DataError: Too few crops with vessels.
        ConfigError: An alpha outside (0, 1).
    """
    fit_on, held_out = _halves(volumes, seed)
    if calibration is not None:
        fit_on = [Crop(calibration.apply(c.prob), c.label, c.source) for c in fit_on]
        held_out = [Crop(calibration.apply(c.prob), c.label, c.source) for c in held_out]
    ids = sorted({c.source for c in fit_on})
    control = fit_fnr_control([c.prob for c in fit_on], [c.label for c in fit_on], alpha, ids=ids)
    sets = fit_prediction_sets(
        [c.prob for c in fit_on], [c.label for c in fit_on], set_alpha or alpha, seed=seed
    )
    test_fnr = [false_negative_rate(control.mask(c.prob), c.label) for c in held_out]
    argmax = sum(int((c.prob > 0.5).sum()) for c in held_out)
    conformal = sum(int(control.mask(c.prob).sum()) for c in held_out)
    uncertain = np.mean([(sets.labels(c.prob) == 2).mean() for c in held_out])
    report = {
        "conformal_alpha": control.alpha,
        "conformal_threshold": control.threshold,
        "conformal_heldout_fnr": float(np.mean(test_fnr)),
        "conformal_heldout_crops": len(held_out),
        "conformal_calibration_crops": len(fit_on),
        "conformal_volume_inflation": conformal / max(argmax, 1),
        "sets_alpha": sets.alpha,
        "sets_heldout_coverage": float(np.mean([sets.coverage(c.prob, c.label) for c in held_out])),
        "sets_heldout_uncertain_fraction": float(uncertain),
    }
    return ConformalFit(control, sets, report)
