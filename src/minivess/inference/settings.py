"""What a checkpoint must say about preprocessing and sliding-window inference to predict alone.

Training writes both into the checkpoint's ``extra`` (see
:func:`minivess.training.recipe.checkpoint_extras`)::

    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {"roi_size": [96, 96, 16], "overlap": 0.25, "sw_batch_size": 1,
                  "precision": "auto", "blend": "constant"}

with ``"target_spacing_um": [h, w, d]`` in ``preprocessing`` when the model was trained on
resampled volumes. An ``inference`` entry without ``blend`` comes from before that setting and
is read as ``gaussian`` (:data:`LEGACY_BLEND`), the blending it was validated with.

They are read back here and validated with the same pydantic models the experiment config uses,
so a checkpoint that predicts in training predicts identically everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from minivess.adapters import CheckpointError, CheckpointInfo
from minivess.config.data import TargetSpacing
from minivess.config.model import InferenceConfig
from minivess.config.validation import describe_validation_error, validate_or_raise

LEGACY_BLEND = "gaussian"
"""Blending of checkpoints and exports whose ``inference`` entry has no ``blend``."""


def stored_inference(entry: Any) -> Any:
    """A checkpoint's or export's ``inference`` entry with the blending it was made with.

    An entry saved before ``blend`` existed was validated with Gaussian weights
    (:data:`LEGACY_BLEND`) and keeps them; anything else is returned as it is.
    """
    if isinstance(entry, dict) and "blend" not in entry:
        return {**entry, "blend": LEGACY_BLEND}
    return entry


class Preprocessing(BaseModel):
    """Per-volume intensity percentiles mapped to 0 and 1 (clipped beyond), as in training."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    percentile_lower: float = Field(ge=0.0, le=100.0)
    """Percentile mapped to 0."""
    percentile_upper: float = Field(ge=0.0, le=100.0)
    """Percentile mapped to 1."""
    target_spacing_um: TargetSpacing | None = None
    """Voxel size (H, W, D) the model was trained at (``data.target_spacing_um``); inputs are
    resampled to it and predictions back to the input's grid. ``None`` entries keep an axis;
    ``None`` (and checkpoints written before the setting existed) predicts on the input's grid."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.percentile_lower >= self.percentile_upper:
            raise ValueError(
                f"percentile_lower ({self.percentile_lower}) must be below percentile_upper "
                f"({self.percentile_upper})"
            )
        return self

    @property
    def percentiles(self) -> tuple[float, float]:
        """``(lower, upper)``, as ``normalise_intensity`` takes them."""
        return self.percentile_lower, self.percentile_upper


@dataclass(frozen=True)
class PredictionSettings:
    """How raw volumes become the network's input and how the network covers them.

    Args:
        preprocessing: Intensity normalisation.
        inference: Sliding window (``roi_size``, ``overlap``, ``sw_batch_size``, ``precision``).

    Example:
        >>> settings = PredictionSettings.from_extra({
        ...     "preprocessing": {"percentile_lower": 1, "percentile_upper": 99.8},
        ...     "inference": {"roi_size": [64, 64, 16], "overlap": 0.25, "sw_batch_size": 1,
        ...                   "precision": "fp32"}})
        >>> settings.inference.roi_size, settings.preprocessing.percentiles
        ((64, 64, 16), (1.0, 99.8))
    """

    preprocessing: Preprocessing
    inference: InferenceConfig

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Self:
        """Settings from a checkpoint's ``extra`` dict; a ValueError naming what is wrong."""
        missing = [key for key in ("preprocessing", "inference") if key not in extra]
        if missing:
            raise ValueError(f"no {' or '.join(repr(k) for k in missing)} entry")
        try:
            preprocessing = Preprocessing.model_validate(extra["preprocessing"])
            inference = InferenceConfig.model_validate(stored_inference(extra["inference"]))
        except ValidationError as exc:
            section = "preprocessing" if exc.title == Preprocessing.__name__ else "inference"
            raise ValueError(describe_validation_error(exc, section)) from None
        return cls(preprocessing, inference)

    def to_extra(self) -> dict[str, Any]:
        """The ``preprocessing`` and ``inference`` entries of a checkpoint's ``extra`` (JSON).

        :meth:`from_extra` reads them back to equal settings.
        """
        return {
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "inference": self.inference.model_dump(mode="json"),
        }

    @classmethod
    def from_checkpoint(cls, info: CheckpointInfo) -> Self:
        """The settings stored in a checkpoint.

        Raises:
            CheckpointError: ``extra["preprocessing"]`` or ``extra["inference"]`` is missing or
                invalid (rule ``prediction-settings``); the message says which key.
        """
        try:
            return cls.from_extra(info.extra)
        except ValueError as exc:
            raise CheckpointError(
                info.path,
                "prediction-settings",
                f"checkpoint cannot predict on its own: {exc}; save it with extra="
                "{'preprocessing': {'percentile_lower': ..., 'percentile_upper': ...}, "
                "'inference': {'roi_size': [h, w, d], 'overlap': ..., 'sw_batch_size': ..., "
                "'precision': ...}} (training does)",
            ) from None

    def with_precision(self, precision: str) -> PredictionSettings:
        """The same settings with another inference precision (validated).

        Raises:
            ConfigError: ``precision`` is not ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        """
        values = {**self.inference.model_dump(), "precision": precision}
        return PredictionSettings(
            self.preprocessing, validate_or_raise(InferenceConfig, values, "inference")
        )
