"""What a model stores about its uncertainty, and how prediction applies it.

Calibration and conformal results live in the checkpoint's ``extra["uncertainty"]`` as plain
JSON values (never a pickle), so the checkpoint file, the MLflow model holding it and every
service that loads it carry them::

    "uncertainty": {
        "calibration": {"method": "platt", "scale": 0.97, "bias": -0.42, "n_voxels": 400000},
        "fnr_control": {"alpha": 0.1, "threshold": 0.23, "n_calibration": 24, ...},
        "prediction_sets": {"alpha": 0.1, "vessel_from": 0.62, "background_to": 0.38, ...},
        "report": {...}
    }

:class:`UncertaintyHead` reads it back and turns a P(vessel) map into a calibrated map, the
risk-controlled mask and the three-state (vessel / background / uncertain) map. The conformal
cut-offs apply to the probability they were fitted on: the calibrated one when the model stores
a calibration (``calibration`` is ``{"method": "temperature", ...}`` in older checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from minivess.errors import ConfigError
from minivess.uncertainty.calibration import Calibration, calibration_from_dict
from minivess.uncertainty.conformal import FNRControl, PredictionSets

EXTRA_KEY = "uncertainty"
"""Key of the uncertainty metadata in a checkpoint's ``extra``."""


@dataclass(frozen=True)
class UncertaintyMaps:
    """Per-voxel outputs of :meth:`UncertaintyHead.apply` (``None`` where not configured).

    Args:
        probability: P(vessel), calibrated when the model stores a calibration.
        conformal_mask: uint8 mask ``P(vessel) > threshold`` with expected FNR <= alpha.
        prediction_set: uint8 map, 0 background, 1 vessel, 2 uncertain.
    """

    probability: np.ndarray
    conformal_mask: np.ndarray | None = None
    prediction_set: np.ndarray | None = None


@dataclass(frozen=True)
class UncertaintyHead:
    """Post-processing of P(vessel) fitted after training and stored with the model.

    Args:
        calibration: Temperature or Platt scaling applied to P(vessel) first.
        fnr_control: Conformal threshold on the (calibrated) probability.
        prediction_sets: Split-conformal set cut-offs on the (calibrated) probability.
        report: Measured numbers (ECE before/after, calibration FNR, ...) for model cards.
    """

    calibration: Calibration | None = None
    fnr_control: FNRControl | None = None
    prediction_sets: PredictionSets | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def apply(self, prob: np.ndarray) -> UncertaintyMaps:
        """Calibrate ``prob`` and derive the conformal mask and prediction-set map."""
        p = np.asarray(prob, dtype=np.float32)
        if self.calibration is not None:
            p = self.calibration.apply(p)
        return UncertaintyMaps(
            probability=p,
            conformal_mask=self.fnr_control.mask(p) if self.fnr_control else None,
            prediction_set=self.prediction_sets.labels(p) if self.prediction_sets else None,
        )

    @property
    def empty(self) -> bool:
        """Whether nothing was fitted."""
        return self.calibration is None and self.fnr_control is None and not self.prediction_sets

    def to_dict(self) -> dict[str, Any]:
        """The ``extra["uncertainty"]`` entry."""
        out: dict[str, Any] = {}
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.fnr_control is not None:
            out["fnr_control"] = self.fnr_control.to_dict()
        if self.prediction_sets is not None:
            out["prediction_sets"] = self.prediction_sets.to_dict()
        if self.report:
            out["report"] = dict(self.report)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Read back :meth:`to_dict`.

        Raises:
            ConfigError: An entry is malformed (names it).
        """
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"extra[{EXTRA_KEY!r}] must be a mapping, got {type(values).__name__}"
            )
        calibration = values.get("calibration")
        fnr = values.get("fnr_control")
        sets = values.get("prediction_sets")
        return cls(
            calibration=calibration_from_dict(calibration) if calibration else None,
            fnr_control=FNRControl.from_dict(fnr) if fnr else None,
            prediction_sets=PredictionSets.from_dict(sets) if sets else None,
            report=dict(values.get("report") or {}),
        )

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Self | None:
        """The head stored in a checkpoint's ``extra``, or ``None`` if it has none."""
        values = extra.get(EXTRA_KEY)
        return cls.from_dict(values) if values else None

    def merged(self, other: UncertaintyHead) -> UncertaintyHead:
        """This head with every part ``other`` defines replaced by ``other``'s.

        When ``other`` brings a new calibration, this head's conformal cut-offs (fitted on the
        old calibrated probability) are carried over to the new one: both maps are increasing,
        so ``new(old^-1(threshold))`` selects exactly the same voxels and the guarantee
        measured for the old cut-off still holds.
        """
        calibration = other.calibration or self.calibration
        fnr_control, sets = self.fnr_control, self.prediction_sets
        if other.calibration is not None and other.calibration != self.calibration:
            old, new = self.calibration, other.calibration
            if fnr_control is not None:
                threshold = _carried(fnr_control.threshold, old, new)
                fnr_control = replace(fnr_control, threshold=threshold)
            if sets is not None:
                sets = replace(
                    sets,
                    vessel_from=_carried(sets.vessel_from, old, new),
                    background_to=_carried(sets.background_to, old, new),
                )
        return UncertaintyHead(
            calibration=calibration,
            fnr_control=other.fnr_control or fnr_control,
            prediction_sets=other.prediction_sets or sets,
            report={**self.report, **other.report},
        )


def _carried(cut: float, old: Calibration | None, new: Calibration) -> float:
    """The cut-off on ``new``-calibrated P(vessel) that selects what ``cut`` did under ``old``.

    Cut-offs outside (0, 1) (``inf`` for "never") select all or nothing and are kept.
    """
    if not 0.0 < cut < 1.0:
        return cut
    raw = old.inverse(cut) if old is not None else np.float64(cut)
    return float(new.apply(np.asarray(raw, dtype=np.float64)))


def save_with_uncertainty(source: str | Path, target: str | Path, head: UncertaintyHead) -> Path:
    """Copy checkpoint ``source`` to ``target`` with ``head`` merged into its uncertainty entry.

    The weights, config, data version and every other ``extra`` entry are kept; the training
    state (optimizer, scheduler) is dropped, since the result is a model to predict with.

    Raises:
        CheckpointError: ``source`` is not a readable checkpoint.
    """
    from minivess.adapters import load_checkpoint

    adapter, info = load_checkpoint(source)
    current = UncertaintyHead.from_extra(info.extra) or UncertaintyHead()
    extra = {k: v for k, v in info.extra.items() if k != "trainer"}
    extra[EXTRA_KEY] = current.merged(head).to_dict()
    extra["derived_from"] = {"path": str(source), "created_at": info.created_at}
    return adapter.save_checkpoint(target, data_version=info.data_version, extra=extra)
