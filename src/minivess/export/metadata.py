"""What an exported ONNX model says about itself, stored in its ``metadata_props``.

Like a checkpoint, an exported model predicts with nothing but the file: the adapter and its
config, the input size rule, the intensity normalisation and the sliding window travel with the
graph as ``minivess.*`` string properties (JSON where structured), readable by any ONNX tool
(Netron shows them under "metadata"). So does the model's uncertainty head (calibration and
conformal results), so an ONNX prediction is calibrated and thresholded like the checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from minivess.adapters import CheckpointError, SizeRule
from minivess.config.model import InferenceConfig, SpatialSize
from minivess.config.validation import describe_validation_error
from minivess.inference.settings import PredictionSettings, Preprocessing, stored_inference

if TYPE_CHECKING:
    from minivess.uncertainty.head import UncertaintyHead

FORMAT = "minivess-onnx"
FORMAT_VERSION = 1
PREFIX = "minivess."
_JSON_FIELDS = frozenset(
    {
        "config",
        "size_rule",
        "preprocessing",
        "inference",
        "spacing",
        "code_version",
        "input_size",
        "uncertainty",
    }
)


class OnnxExportError(CheckpointError):
    """A file that is not a usable minivess ONNX model (corrupt, foreign, bad metadata)."""


class SizeRuleSpec(BaseModel):
    """:class:`~minivess.adapters.SizeRule` as plain values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    divisor: SpatialSize
    minimum: SpatialSize

    def rule(self) -> SizeRule:
        """The size rule."""
        return SizeRule(self.divisor, self.minimum)


class OnnxMetadata(BaseModel):
    """Everything an exported model carries beside its graph.

    Example:
        >>> meta.to_props()["minivess.adapter"]  # doctest: +SKIP
        'segresnet'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    format: str = FORMAT
    """Always ``minivess-onnx``."""
    format_version: int = Field(default=FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    """Layout of these properties; a newer one needs a newer minivess."""
    adapter: str
    """Registry name of the adapter the graph was exported from."""
    config: dict[str, Any]
    """The adapter config (JSON values)."""
    size_rule: SizeRuleSpec
    """Spatial sizes the network accepts (per-axis divisor and minimum)."""
    input_size: SpatialSize | None = None
    """The only spatial size the graph accepts, or ``None`` if H, W and D are dynamic."""
    preprocessing: Preprocessing
    """Intensity percentiles mapped to [0, 1], as in training."""
    inference: InferenceConfig
    """Sliding window: ROI, overlap, windows per run (precision is always fp32 here)."""
    spacing: tuple[float, float, float] | None = None
    """Voxel size (micrometres) of the training data, if it was resampled to one."""
    training_run_id: str | None = None
    """MLflow run that trained the weights."""
    data_version: str | None = None
    """Version of the training data."""
    code_version: dict[str, str | None] = Field(default_factory=dict)
    """minivess, git commit, torch and monai versions that trained the weights."""
    created_at: str = ""
    """When the checkpoint was written (ISO-8601 UTC)."""
    minivess_version: str
    """minivess version that exported the graph."""
    uncertainty: dict[str, Any] | None = None
    """The checkpoint's ``extra["uncertainty"]`` (calibration, conformal threshold, prediction
    sets; see :class:`~minivess.uncertainty.UncertaintyHead`), applied by
    :meth:`~minivess.inference.Predictor.from_source` to every prediction of the graph."""

    @field_validator("inference", mode="before")
    @classmethod
    def _legacy_blend(cls, value: Any) -> Any:
        """An export made before ``inference.blend`` existed keeps the blending it had."""
        return stored_inference(value)

    @field_validator("uncertainty")
    @classmethod
    def _valid_head(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Only a head that :class:`~minivess.uncertainty.UncertaintyHead` reads back."""
        from minivess.errors import ConfigError
        from minivess.uncertainty.head import UncertaintyHead

        if value is None:
            return None
        try:
            return UncertaintyHead.from_dict(value).to_dict() or None
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def head(self) -> UncertaintyHead | None:
        """The stored uncertainty head, or ``None`` when the model has none."""
        from minivess.uncertainty.head import UncertaintyHead

        return UncertaintyHead.from_dict(self.uncertainty) if self.uncertainty else None

    @property
    def settings(self) -> PredictionSettings:
        """Normalisation and sliding window, as :class:`~minivess.inference.Predictor` takes."""
        return PredictionSettings(self.preprocessing, self.inference)

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: ``minivess.<field>`` -> string (JSON where structured)."""
        props = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            text = json.dumps(value) if name in _JSON_FIELDS else str(value)
            props[PREFIX + name] = text
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path) -> Self:
        """Parse ``metadata_props`` written by :meth:`to_props`.

        Raises:
            OnnxExportError: Not a minivess export, a newer format, or an invalid field.
        """
        if props.get(PREFIX + "format") != FORMAT:
            raise OnnxExportError(
                path,
                "onnx-metadata",
                "an ONNX model without minivess metadata (exported by another tool?); export "
                "it with `minivess export`",
            )
        raw: dict[str, Any] = {}
        for key, text in props.items():
            if not key.startswith(PREFIX):
                continue
            name = key.removeprefix(PREFIX)
            try:
                raw[name] = json.loads(text) if name in _JSON_FIELDS else text
            except json.JSONDecodeError:
                raise OnnxExportError(
                    path, "onnx-metadata", f"metadata {key} is not valid JSON: {text[:80]!r}"
                ) from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise OnnxExportError(
                path,
                "onnx-metadata",
                f"invalid minivess metadata: {describe_validation_error(exc)}; re-export the "
                "model with this minivess version",
            ) from None
