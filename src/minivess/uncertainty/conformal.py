"""Conformal uncertainty for vessel masks, with MAPIE.

Two tools, with two different guarantees:

* **False-negative-rate control** (conformal risk control, Angelopoulos et al. 2022, MAPIE's
  ``SemanticSegmentationController`` with ``risk="recall"``, ``method="crc"``): a probability
  threshold ``lambda`` fitted on ``n`` labelled calibration volumes such that, for a new volume
  exchangeable with them, ``E[FNR] <= alpha``, where FNR is the fraction of the volume's true
  vessel voxels that ``P(vessel) > lambda`` misses. The expectation is over the draw of the
  calibration set and the new volume; one volume can exceed ``alpha``.
* **Split-conformal prediction sets** per voxel (MAPIE's ``SplitConformalClassifier``, LAC
  score): each voxel gets the set of classes whose probability is high enough, so that the set
  contains the true class for ``1 - alpha`` of voxels drawn like the calibration voxels.
  Singletons are confident (vessel or background); a voxel whose set holds both is *uncertain*.

The FNR of a volume depends only on the probabilities of its true vessel voxels, so each
calibration volume is summarised by ``QUANTILES`` quantiles of those probabilities (a
fixed-length vector, which keeps MAPIE's memory bounded on 10^7-voxel volumes); this changes a
volume's FNR at any threshold by at most ``1 / QUANTILES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from minivess.errors import ConfigError, DataError

QUANTILES = 2000
"""Quantiles of the vessel-voxel probabilities that stand for one calibration volume."""
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0, 0.005), 3)
"""Thresholds searched for FNR control (MAPIE masks ``P(vessel) > lambda``)."""
SET_VOXELS_PER_VOLUME = 20_000
"""Voxels drawn uniformly per calibration volume to fit the prediction sets."""

BACKGROUND, VESSEL, UNCERTAIN = 0, 1, 2
"""Values of the three-state map :meth:`PredictionSets.labels` returns."""


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def vessel_quantiles(prob: np.ndarray, label: np.ndarray, *, k: int = QUANTILES) -> np.ndarray:
    """``k`` evenly spaced quantiles of P(vessel) over the true vessel voxels of one volume.

    Raises:
        DataError: The volume has no vessel voxel (its FNR is undefined) or shapes differ.
    """
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(label) != 0
    if p.shape != y.shape:
        raise DataError(None, "shape", f"probabilities {p.shape} and label {y.shape} differ")
    vessel = p[y]
    if vessel.size == 0:
        raise DataError(
            None,
            "no-vessel",
            "a calibration volume without vessel voxels has no false-negative rate; "
            "leave it out of the calibration set",
        )
    return np.quantile(vessel, (np.arange(k) + 0.5) / k)


def false_negative_rate(mask: np.ndarray, label: np.ndarray) -> float:
    """Fraction of the label's vessel voxels that ``mask`` misses (NaN without vessels)."""
    y = np.asarray(label) != 0
    n = int(y.sum())
    if n == 0:
        return float("nan")
    return float(np.count_nonzero(y & ~np.asarray(mask, dtype=bool)) / n)


def crc_thresholds(
    quantiles: np.ndarray, alphas: Sequence[float], *, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """MAPIE's CRC thresholds, one per alpha, from per-volume vessel-probability quantiles.

    Args:
        quantiles: ``(n_volumes, k)`` from :func:`vessel_quantiles`.
        alphas: Target FNR levels.
        grid: Candidate thresholds (increasing).

    Returns:
        The largest threshold per alpha whose CRC-corrected calibration FNR is at most alpha.
    """
    from mapie.risk_control import SemanticSegmentationController

    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 2 or len(q) < 1:
        raise DataError(None, "calibration-set", "need at least one calibration volume")
    controller = SemanticSegmentationController(
        predict_function=lambda x: x,
        risk="recall",
        method="crc",
        target_level=[1.0 - _check_alpha(a) for a in alphas],
        predict_params=np.asarray(grid, dtype=np.float64),
    )
    controller.calibrate(q[:, None, :], np.ones(q.shape, dtype=np.int64))
    return np.asarray(controller.best_predict_param, dtype=np.float64)


def quantile_fnr(quantiles: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per volume and threshold, the FNR of ``p > threshold`` as MAPIE sees it from quantiles."""
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=1)
    return np.stack([np.searchsorted(row, grid, side="right") / row.size for row in q])


def crc_rule(
    fnr: np.ndarray, alphas: Sequence[float], grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """MAPIE's CRC threshold choice, vectorised, from a ``(volumes, thresholds)`` FNR matrix.

    The bound is ``n / (n + 1) * mean FNR + 1 / (n + 1)``; the threshold is the last grid value
    before the bound first reaches alpha (the first one if it never is below). It returns what
    :func:`crc_thresholds` returns (tested), at a cost that allows thousands of resampled
    calibration sets in :mod:`minivess.uncertainty.validation`.
    """
    risks = np.asarray(fnr, dtype=np.float64)
    n = len(risks)
    bound = n / (n + 1) * risks.mean(axis=0) + 1 / (n + 1)
    out = []
    for alpha in alphas:
        failing = np.flatnonzero(bound >= _check_alpha(alpha))
        first = int(failing[0]) if failing.size else len(grid)
        out.append(grid[max(first - 1, 0)])
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class FNRControl:
    """A threshold on P(vessel) with a conformal bound on the expected false-negative rate.

    Args:
        alpha: Target expected per-volume FNR.
        threshold: Voxels with ``P(vessel) > threshold`` are vessel.
        n_calibration: Calibration volumes.
        calibration_ids: Their ids.
        calibration_fnr: Mean FNR on the calibration volumes at ``threshold``.
    """

    alpha: float
    threshold: float
    n_calibration: int
    calibration_ids: tuple[str, ...] = ()
    calibration_fnr: float | None = None

    def mask(self, prob: np.ndarray) -> np.ndarray:
        """The risk-controlled vessel mask (uint8)."""
        return (np.asarray(prob) > self.threshold).astype(np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """Plain values to store with the model."""
        return {
            "alpha": self.alpha,
            "threshold": self.threshold,
            "n_calibration": self.n_calibration,
            "calibration_ids": list(self.calibration_ids),
            "calibration_fnr": self.calibration_fnr,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Read back :meth:`to_dict`."""
        try:
            return cls(
                alpha=_check_alpha(float(values["alpha"])),
                threshold=float(values["threshold"]),
                n_calibration=int(values["n_calibration"]),
                calibration_ids=tuple(str(i) for i in values.get("calibration_ids", ())),
                calibration_fnr=(
                    float(values["calibration_fnr"])
                    if values.get("calibration_fnr") is not None
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"stored FNR control {values!r} is invalid: {exc}") from None


def fit_fnr_control(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    alpha: float,
    *,
    ids: Sequence[str] = (),
) -> FNRControl:
    """Calibrate the FNR threshold on labelled volumes (or crops) with MAPIE's CRC.

    Args:
        probs: P(vessel) of each calibration volume (as the model will predict it, e.g.
            after temperature scaling).
        labels: Their labels; every volume must contain vessel voxels.
        alpha: Target expected FNR.
        ids: Names of the calibration volumes, stored with the result.

    Raises:
        DataError: A volume without vessels, or mismatched shapes.
        ConfigError: ``alpha`` outside (0, 1).
    """
    q = np.stack([vessel_quantiles(p, y) for p, y in zip(probs, labels, strict=True)])
    threshold = float(crc_thresholds(q, [alpha])[0])
    fnr = [
        false_negative_rate(np.asarray(p) > threshold, y)
        for p, y in zip(probs, labels, strict=True)
    ]
    return FNRControl(
        alpha=_check_alpha(alpha),
        threshold=threshold,
        n_calibration=len(q),
        calibration_ids=tuple(ids),
        calibration_fnr=float(np.mean(fnr)),
    )


class _Prefit:
    """The smallest sklearn-style classifier MAPIE accepts: P(vessel) in, both classes out."""

    classes_ = np.array([0, 1])
    _estimator_type = "classifier"

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Prefit:
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(x, dtype=np.float64)[:, 0]
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x)[:, 0] > 0.5).astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
        )


@dataclass(frozen=True)
class PredictionSets:
    """Split-conformal sets per voxel, as two probability cut-offs.

    The set of a voxel contains *vessel* when ``P(vessel) >= vessel_from`` and *background*
    when ``P(vessel) <= background_to``.

    Args:
        alpha: Miscoverage: sets miss the true class for about ``alpha`` of the voxels.
        vessel_from: Smallest P(vessel) whose set contains vessel.
        background_to: Largest P(vessel) whose set contains background.
        n_voxels: Calibration voxels.
    """

    alpha: float
    vessel_from: float
    background_to: float
    n_voxels: int = 0

    def labels(self, prob: np.ndarray) -> np.ndarray:
        """uint8 map: 0 background, 1 vessel, 2 uncertain (both classes, or neither)."""
        p = np.asarray(prob)
        has_vessel = p >= self.vessel_from
        has_background = p <= self.background_to
        out = np.full(p.shape, UNCERTAIN, dtype=np.uint8)
        out[has_vessel & ~has_background] = VESSEL
        out[has_background & ~has_vessel] = BACKGROUND
        return out

    def coverage(self, prob: np.ndarray, label: np.ndarray) -> float:
        """Fraction of voxels whose set contains the true class."""
        p = np.asarray(prob)
        y = np.asarray(label) != 0
        covered = np.where(y, p >= self.vessel_from, p <= self.background_to)
        return float(covered.mean())

    def to_dict(self) -> dict[str, Any]:
        """Plain values to store with the model."""
        return {
            "alpha": self.alpha,
            "vessel_from": self.vessel_from,
            "background_to": self.background_to,
            "n_voxels": self.n_voxels,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Read back :meth:`to_dict`."""
        try:
            return cls(
                alpha=_check_alpha(float(values["alpha"])),
                vessel_from=float(values["vessel_from"]),
                background_to=float(values["background_to"]),
                n_voxels=int(values.get("n_voxels", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"stored prediction sets {values!r} are invalid: {exc}") from None


def fit_prediction_sets(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    alpha: float,
    *,
    voxels_per_volume: int = SET_VOXELS_PER_VOLUME,
    seed: int = 0,
) -> PredictionSets:
    """Calibrate per-voxel prediction sets with MAPIE's ``SplitConformalClassifier`` (LAC).

    Voxels are drawn uniformly from each calibration volume; the two cut-offs are read from
    MAPIE's sets on a fine grid of probabilities, so prediction needs no MAPIE object.

    Raises:
        ConfigError: ``alpha`` outside (0, 1).
        DataError: Mismatched shapes or no volume.
    """
    from mapie.classification import SplitConformalClassifier

    alpha = _check_alpha(alpha)
    if not probs or len(probs) != len(labels):
        raise DataError(None, "calibration-set", "need as many label volumes as probability maps")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for p, y in zip(probs, labels, strict=True):
        p_flat, y_flat = np.asarray(p).ravel(), (np.asarray(y) != 0).ravel()
        if p_flat.shape != y_flat.shape:
            raise DataError(None, "shape", "each probability map must match its label's shape")
        pick = rng.choice(p_flat.size, size=min(voxels_per_volume, p_flat.size), replace=False)
        xs.append(p_flat[pick])
        ys.append(y_flat[pick])
    x = np.concatenate(xs).astype(np.float64)[:, None]
    y = np.concatenate(ys).astype(np.int64)
    sets = SplitConformalClassifier(_Prefit(), confidence_level=1.0 - alpha, prefit=True)
    sets.conformalize(x, y)
    grid = np.linspace(0.0, 1.0, 10_001)
    _, membership = sets.predict_set(grid[:, None])
    has_background, has_vessel = membership[:, 0, 0], membership[:, 1, 0]
    vessel_from = float(grid[has_vessel].min()) if has_vessel.any() else float("inf")
    background_to = float(grid[has_background].max()) if has_background.any() else float("-inf")
    return PredictionSets(alpha, vessel_from, background_to, n_voxels=int(y.size))
