"""Temperature scaling of P(vessel), fitted with netcal on class-balanced validation voxels.

A two-class softmax has ``logit(P(vessel)) = z_vessel - z_background``, so scaling both logits
by one factor is the same as scaling the logit of P(vessel): the calibrated probability is
``sigmoid(t * logit(p))``. netcal's ``TemperatureScaling`` fits ``t`` (a multiplier on the logit;
the textbook temperature is ``1 / t``) by maximum likelihood. The fitted value is stored as a
plain number with the model (never netcal's pickle), and applied at prediction time.

Voxels are sampled class-balanced (equal numbers of vessel and background voxels): on sparse
vessel masks an unbalanced fit is decided by easy background far from any vessel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np

from minivess.errors import ConfigError, DataError

EPS = 1e-6
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` before taking the logit."""
VOXELS_PER_CLASS = 200_000
"""Default number of vessel and of background voxels the temperature is fitted on."""


@dataclass(frozen=True)
class TemperatureScaling:
    """A fitted temperature: ``calibrated = sigmoid(scale * logit(p))``.

    Args:
        scale: Multiplier on the logit of P(vessel) (netcal's ``temperature``); below 1
            softens an over-confident model, above 1 sharpens an under-confident one.
        n_voxels: Voxels it was fitted on.
        sampling: How those voxels were drawn (``"balanced"`` or ``"prevalence"``).

    Example:
        >>> TemperatureScaling(scale=0.5).apply(np.array([0.5, 0.9])).round(3)
        array([0.5, 0.75], dtype=float32)
    """

    scale: float
    n_voxels: int = 0
    sampling: str = "balanced"

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"temperature scale must be a positive number, got {self.scale}")

    @property
    def temperature(self) -> float:
        """The textbook temperature ``T = 1 / scale`` (logits are divided by it)."""
        return 1.0 / self.scale

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated P(vessel), float32, same shape as ``prob``."""
        p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1.0 - EPS)
        z = self.scale * np.log(p / (1.0 - p))
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain values to store with the model."""
        return {
            "method": "temperature",
            "scale": float(self.scale),
            "n_voxels": int(self.n_voxels),
            "sampling": self.sampling,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Read back :meth:`to_dict`; a ConfigError naming what is wrong."""
        if values.get("method") != "temperature" or "scale" not in values:
            raise ConfigError(
                f"stored calibration {values!r} is not a temperature scaling "
                "({'method': 'temperature', 'scale': ...})"
            )
        return cls(
            float(values["scale"]),
            int(values.get("n_voxels", 0)),
            str(values.get("sampling", "balanced")),
        )


Sampling = Literal["balanced", "prevalence"]
"""How fitting voxels are drawn: as many vessel as background voxels, or at the volumes' own
vessel prevalence (an unbiased likelihood: what lowers the plain voxel ECE)."""


def balanced_sample(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    per_class: int = VOXELS_PER_CLASS,
    seed: int = 0,
    sampling: Sampling = "balanced",
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` vessel and as many background voxels, drawn uniformly from all volumes.

    With ``sampling="prevalence"``, ``2 * per_class`` voxels are drawn uniformly instead, so
    the classes keep their proportion in the volumes.

    Returns:
        ``(prob, label)`` vectors (float64, int64).

    Raises:
        DataError: No vessel or no background voxel at all, or mismatched shapes.
    """
    if len(probs) != len(labels) or not probs:
        raise DataError(None, "calibration-set", "need as many label volumes as probability maps")
    p_all = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in probs])
    y_all = np.concatenate([(np.asarray(y) != 0).ravel() for y in labels])
    if p_all.shape != y_all.shape:
        raise DataError(None, "shape", "each probability map must match its label's shape")
    rng = np.random.default_rng(seed)
    if sampling == "prevalence":
        index = rng.choice(y_all.size, size=min(2 * per_class, y_all.size), replace=False)
        return p_all[index], y_all[index].astype(np.int64)
    chosen = []
    for cls in (True, False):
        where = np.flatnonzero(y_all == cls)
        if where.size == 0:
            name = "vessel" if cls else "background"
            raise DataError(None, "calibration-set", f"the calibration volumes hold no {name}")
        chosen.append(rng.choice(where, size=min(per_class, where.size), replace=False))
    n = min(len(c) for c in chosen)
    index = np.concatenate([c[:n] for c in chosen])
    return p_all[index], y_all[index].astype(np.int64)


def fit_temperature(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    per_class: int = VOXELS_PER_CLASS,
    seed: int = 0,
    sampling: Sampling = "balanced",
) -> TemperatureScaling:
    """Fit a temperature with netcal on class-balanced voxels of validation volumes.

    Args:
        probs: P(vessel) maps of the validation volumes (uncalibrated).
        labels: Their labels (non-zero on vessels), same shapes.
        per_class: Voxels drawn per class.
        seed: Seed of the voxel sampling.
        sampling: ``"balanced"`` (default: vessel and background voxels count equally, which
            lowers the class-balanced ECE) or ``"prevalence"`` (voxels at their natural
            proportion, which lowers the plain voxel ECE).

    Raises:
        DataError: No vessel or no background voxel in the volumes.
    """
    from netcal.scaling import TemperatureScaling as NetcalTemperature

    p, y = balanced_sample(probs, labels, per_class=per_class, seed=seed, sampling=sampling)
    model = NetcalTemperature()
    model.fit(np.clip(p, EPS, 1.0 - EPS), y)
    scale = float(np.asarray(model.temperature).ravel()[0])
    return TemperatureScaling(scale=scale, n_voxels=int(p.size), sampling=sampling)
