"""Calibration metrics of a vessel probability map: ECE, adaptive and class-balanced ECE, Brier.

All metrics score P(vessel) against the binary label, voxel by voxel. On sparse vessel masks
(5-30 % of the voxels) the plain voxel ECE is dominated by confidently predicted background, so
two variants are reported beside it:

* **adaptive ECE** uses equal-mass bins (every bin holds the same number of voxels), so the
  few voxels at intermediate probabilities are not averaged away in a wide bin;
* **class-balanced ECE** weights voxels so that vessel and background voxels count equally,
  which is the ECE a reader of vessel boundaries cares about.

Example:
    >>> prob = np.array([0.1, 0.2, 0.8, 0.9])
    >>> label = np.array([0, 0, 1, 1])
    >>> round(calibration_metrics(prob, label, n_bins=2).brier, 3)
    0.025
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from minivess.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

N_BINS = 15
"""Bins of the ECE variants and the reliability diagram (the usual choice in the literature)."""


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy of P(vessel) in bits, ``float32`` in [0, 1]: 0 where the model is sure, 1 at 0.5.

    ``0 * log 0`` is taken as 0. The demo's entropy overlay and the service's ``/entropy`` map.

    Example:
        >>> binary_entropy(np.array([0.0, 0.5, 1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vessel = np.where(p > 0, p * np.log2(p), 0.0)
        background = np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0)
    return (np.clip(-(vessel + background), 0.0, 1.0) + 0.0).astype(np.float32)  # no -0.0


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration of P(vessel) on a set of voxels.

    Args:
        ece: Expected calibration error with equal-width bins.
        adaptive_ece: ECE with equal-mass bins.
        class_balanced_ece: Equal-width ECE with vessel and background voxels weighted equally.
        brier: Mean squared error between P(vessel) and the label.
        n_voxels: Voxels scored.
        vessel_fraction: Fraction of them labelled vessel.
    """

    ece: float
    adaptive_ece: float
    class_balanced_ece: float
    brier: float
    n_voxels: int
    vessel_fraction: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready values."""
        return asdict(self)


def _flat(prob: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob, dtype=np.float64).ravel()
    y = (np.asarray(label) != 0).ravel()
    if p.shape != y.shape:
        raise DataError(None, "shape", f"probabilities {p.shape} and labels {y.shape} differ")
    if p.size == 0:
        raise DataError(None, "empty", "no voxels to score")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise DataError(None, "probability-range", "probabilities must be finite and in [0, 1]")
    return p, y


def _binned_ece(p: np.ndarray, y: np.ndarray, bins: np.ndarray, weights: np.ndarray) -> float:
    """Sum over bins of the bin's weight share times |mean label - mean probability|.

    With per-bin sums this is ``sum_b |sum_b(w y) - sum_b(w p)| / sum(w)``.
    """
    n_bins = int(bins.max()) + 1
    labelled = np.bincount(bins, weights=weights * y, minlength=n_bins)
    predicted = np.bincount(bins, weights=weights * p, minlength=n_bins)
    return float(np.abs(labelled - predicted).sum() / weights.sum())


def _width_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(
    prob: np.ndarray, label: np.ndarray, *, n_bins: int = N_BINS, class_balanced: bool = False
) -> float:
    """ECE of P(vessel) with ``n_bins`` equal-width bins.

    Args:
        prob: P(vessel) per voxel, any shape.
        label: Non-zero on vessel voxels, same shape.
        n_bins: Number of bins on [0, 1].
        class_balanced: Weight voxels so vessel and background count equally.
    """
    p, y = _flat(prob, label)
    weights = np.ones_like(p)
    if class_balanced:
        n_pos = int(y.sum())
        n_neg = y.size - n_pos
        weights = np.where(y, 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1))
    return _binned_ece(p, y, _width_bins(p, n_bins), weights)


def adaptive_calibration_error(
    prob: np.ndarray, label: np.ndarray, *, n_bins: int = N_BINS
) -> float:
    """ECE of P(vessel) with ``n_bins`` equal-mass bins (voxels sorted by probability)."""
    p, y = _flat(prob, label)
    order = np.argsort(p, kind="stable")
    bins = np.empty(p.size, dtype=np.int64)
    bins[order] = np.arange(p.size) * n_bins // p.size
    return _binned_ece(p, y, bins, np.ones_like(p))


def brier_score(prob: np.ndarray, label: np.ndarray) -> float:
    """Mean squared difference between P(vessel) and the 0/1 label."""
    p, y = _flat(prob, label)
    return float(np.mean((p - y) ** 2))


def calibration_metrics(
    prob: np.ndarray, label: np.ndarray, *, n_bins: int = N_BINS
) -> CalibrationReport:
    """Every calibration metric of ``prob`` against ``label`` (flattened together).

    Raises:
        DataError: Shapes differ, no voxel, or probabilities outside [0, 1].
    """
    p, y = _flat(prob, label)
    return CalibrationReport(
        ece=expected_calibration_error(p, y, n_bins=n_bins),
        adaptive_ece=adaptive_calibration_error(p, y, n_bins=n_bins),
        class_balanced_ece=expected_calibration_error(p, y, n_bins=n_bins, class_balanced=True),
        brier=brier_score(p, y),
        n_voxels=int(p.size),
        vessel_fraction=float(y.mean()),
    )


def reliability_curve(
    prob: np.ndarray, label: np.ndarray, *, n_bins: int = N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean P(vessel), observed vessel frequency, voxel count.

    Empty bins are NaN with count 0.
    """
    p, y = _flat(prob, label)
    bins = _width_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        freq = np.bincount(bins, weights=y.astype(np.float64), minlength=n_bins) / counts
    return mean_p, freq, counts


def reliability_diagram(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_bins: int = N_BINS,
    title: str = "Reliability of P(vessel)",
    reports: Mapping[str, CalibrationReport] | None = None,
) -> Figure:
    """A reliability diagram with one line per named ``(prob, label)`` pair.

    Args:
        curves: e.g. ``{"before": (prob, label), "after": (calibrated, label)}``.
        n_bins: Equal-width bins.
        title: Figure title.
        reports: Optional metrics per name, shown in the legend.

    Returns:
        A matplotlib figure (save it with :func:`minivess.evaluation.figures.save_png`).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.2), layout="constrained")
    ax, hist = figure.subplots(1, 2)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect")
    for name, (prob, label) in curves.items():
        mean_p, freq, counts = reliability_curve(prob, label, n_bins=n_bins)
        shown = counts > 0
        legend = name
        if reports is not None and name in reports:
            r = reports[name]
            legend = f"{name}: ECE {r.ece:.4f}, cb-ECE {r.class_balanced_ece:.3f}"
        ax.plot(mean_p[shown], freq[shown], marker="o", label=legend)
        centres = (np.arange(n_bins) + 0.5) / n_bins
        hist.plot(centres, np.maximum(counts, 1), marker=".", label=name)
    ax.set(xlabel="mean predicted P(vessel)", ylabel="observed vessel frequency", title=title)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    hist.set(yscale="log", xlabel="P(vessel) bin", ylabel="voxels", title="voxels per bin")
    hist.legend(fontsize=8)
    return figure


def pooled(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Arrays of different shapes flattened into one vector (voxels of several volumes)."""
    return np.concatenate([np.asarray(a).ravel() for a in arrays])
