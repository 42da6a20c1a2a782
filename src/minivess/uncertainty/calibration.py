"""Calibration of P(vessel) fitted with netcal: temperature scaling and Platt scaling.

A two-class softmax has ``logit(P(vessel)) = z_vessel - z_background``, so scaling both logits
by one factor is the same as scaling the logit of P(vessel). Both maps here act on that logit:

* **temperature** (netcal ``TemperatureScaling``): ``sigmoid(t * logit(p))``; ``t`` is a
  multiplier on the logit (the textbook temperature is ``1 / t``). It fixes over- or
  under-confidence but keeps P = 0.5 where it is, so it cannot move a systematic offset;
* **Platt** (netcal ``LogisticCalibration``): ``sigmoid(a * logit(p) + b)``, logistic
  regression on the logit; the intercept ``b`` moves an offset (a model that predicts too much or
  too little vessel everywhere).

Both are fitted by maximum likelihood and stored as plain numbers with the model (never
netcal's pickle), and applied at prediction time. Both are increasing maps of P(vessel), so a
threshold on the uncalibrated probability is a threshold on the calibrated one
(:meth:`TemperatureScaling.inverse`).

Voxels are sampled class-balanced (equal numbers of vessel and background voxels) or at their
natural prevalence: on sparse vessel masks an unbalanced fit is decided by easy background far
from any vessel, while a balanced fit calibrates for a 50 % vessel prior (see
:func:`fit_platt` for the correction back to the volumes' prior).
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
        return _sigmoid(self.scale * _logit(prob)).astype(np.float32)

    def inverse(self, prob: np.ndarray | float) -> np.ndarray:
        """The uncalibrated P(vessel) that :meth:`apply` maps to ``prob`` (float64)."""
        return _sigmoid(_logit(prob) / self.scale)

    def describe(self) -> str:
        """One line for model cards and the CLI."""
        return f"temperature scaling, T = {self.temperature:.3f} (logit x {self.scale:.3f})"

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


@dataclass(frozen=True)
class PlattScaling:
    """Fitted Platt scaling: ``calibrated = sigmoid(scale * logit(p) + bias)``.

    Args:
        scale: Multiplier on the logit of P(vessel) (netcal's ``weights``); must be positive
            so that the map keeps the order of the probabilities.
        bias: Added to the scaled logit (netcal's ``intercept``, plus ``prior_shift``); negative
            lowers P(vessel) everywhere.
        n_voxels: Voxels it was fitted on.
        sampling: How those voxels were drawn (``"balanced"`` or ``"prevalence"``).
        prior_shift: Log-odds of the fitting volumes' vessel prevalence added to netcal's
            intercept to undo a class-balanced sample (0 when none was added).

    Example:
        >>> PlattScaling(scale=1.0, bias=-np.log(3)).apply(np.array([0.5, 0.75])).round(3)
        array([0.25, 0.5 ], dtype=float32)
    """

    scale: float
    bias: float
    n_voxels: int = 0
    sampling: str = "prevalence"
    prior_shift: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"Platt scale must be a positive number, got {self.scale}")
        if not np.isfinite(self.bias) or not np.isfinite(self.prior_shift):
            raise ConfigError(f"Platt bias must be a finite number, got {self.bias}")

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated P(vessel), float32, same shape as ``prob``."""
        return _sigmoid(self.scale * _logit(prob) + self.bias).astype(np.float32)

    def inverse(self, prob: np.ndarray | float) -> np.ndarray:
        """The uncalibrated P(vessel) that :meth:`apply` maps to ``prob`` (float64)."""
        return _sigmoid((_logit(prob) - self.bias) / self.scale)

    def describe(self) -> str:
        """One line for model cards and the CLI."""
        return (
            f"Platt scaling, sigmoid({self.scale:.3f} x logit(p) {self.bias:+.3f}); "
            f"P(vessel) = 0.5 moves to uncalibrated p = {float(self.inverse(0.5)):.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values to store with the model."""
        return {
            "method": "platt",
            "scale": float(self.scale),
            "bias": float(self.bias),
            "n_voxels": int(self.n_voxels),
            "sampling": self.sampling,
            "prior_shift": float(self.prior_shift),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Read back :meth:`to_dict`; a ConfigError naming what is wrong."""
        if values.get("method") != "platt" or "scale" not in values or "bias" not in values:
            raise ConfigError(
                f"stored calibration {values!r} is not a Platt scaling "
                "({'method': 'platt', 'scale': ..., 'bias': ...})"
            )
        return cls(
            float(values["scale"]),
            float(values["bias"]),
            int(values.get("n_voxels", 0)),
            str(values.get("sampling", "prevalence")),
            float(values.get("prior_shift", 0.0)),
        )


Calibration = TemperatureScaling | PlattScaling
"""A fitted calibration map of P(vessel)."""
METHODS: dict[str, type[TemperatureScaling] | type[PlattScaling]] = {
    "temperature": TemperatureScaling,
    "platt": PlattScaling,
}
"""Stored ``method`` name -> calibration class."""


def calibration_from_dict(values: dict[str, Any]) -> Calibration:
    """The calibration stored as ``values`` (``{"method": "temperature" | "platt", ...}``).

    Raises:
        ConfigError: Unknown method or malformed values (names them).
    """
    method = values.get("method") if isinstance(values, dict) else None
    if method not in METHODS:
        raise ConfigError(
            f"stored calibration {values!r} has unknown method {method!r}; "
            f"expected one of {', '.join(METHODS)}"
        )
    return METHODS[str(method)].from_dict(values)


def _logit(prob: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1.0 - EPS)
    return np.asarray(np.log(p / (1.0 - p)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


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
    _check_slope(scale, "temperature scaling")
    return TemperatureScaling(scale=scale, n_voxels=int(p.size), sampling=sampling)


def fit_platt(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    per_class: int = VOXELS_PER_CLASS,
    seed: int = 0,
    sampling: Sampling = "prevalence",
    correct_prior: bool = True,
) -> PlattScaling:
    """Fit Platt scaling (logistic regression on the logit) with netcal on validation voxels.

    A class-balanced sample fits ``P(vessel)`` for a 50 % vessel prior. With ``correct_prior``
    the intercept is shifted by the log-odds ``log(pi / (1 - pi))`` of the fitting volumes' own
    vessel prevalence ``pi`` (the prior-shift correction of Saerens et al., 2002), so that the
    result is calibrated at the prevalence the volumes have; without it, the map serves the
    class-balanced ECE and over-states P(vessel) on sparse vessels.

    Args:
        probs: P(vessel) maps of the validation volumes (uncalibrated).
        labels: Their labels (non-zero on vessels), same shapes.
        per_class: Voxels drawn per class (``2 * per_class`` at prevalence).
        seed: Seed of the voxel sampling.
        sampling: ``"prevalence"`` (default) or ``"balanced"``.
        correct_prior: Shift a balanced fit's intercept to the volumes' prevalence.

    Raises:
        DataError: No vessel or no background voxel in the volumes, or P(vessel) that falls
            as vessels become likelier (no increasing calibration map exists).
    """
    from netcal.scaling import LogisticCalibration

    p, y = balanced_sample(probs, labels, per_class=per_class, seed=seed, sampling=sampling)
    model = LogisticCalibration(method="mle")
    model.fit(np.clip(p, EPS, 1.0 - EPS), y)
    scale = float(np.asarray(model.weights).ravel()[0])
    bias = float(np.asarray(model.intercept).ravel()[0])
    _check_slope(scale, "Platt scaling")
    shift = 0.0
    if sampling == "balanced" and correct_prior:
        vessel = sum(int(np.count_nonzero(y_)) for y_ in labels)
        total = sum(int(np.asarray(y_).size) for y_ in labels)
        shift = float(np.log(vessel / (total - vessel)))
    return PlattScaling(scale, bias + shift, int(p.size), sampling, shift)


def _check_slope(scale: float, method: str) -> None:
    """A DataError when the fitted logit multiplier would reverse the model's ranking."""
    if not scale > 0:
        raise DataError(
            None,
            "calibration-set",
            f"{method} fitted a non-positive slope ({scale:.3g}): P(vessel) does not rise with "
            "the label on these volumes, so no calibration keeps the model's ranking",
        )
