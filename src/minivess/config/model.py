"""Which network to train and how to run it over whole volumes.

:class:`ModelConfig` accepts exactly the adapters registered in
:data:`minivess.adapters.ADAPTERS` (built-ins and ``minivess.adapters`` entry points) and
validates ``params`` with the chosen adapter's own ``config_class``, so a config that validates
here always builds.

Example:
    >>> cfg = ModelConfig(name="segresnet", params={"init_filters": 8})  # doctest: +SKIP
    >>> cfg.params["blocks_down"]  # doctest: +SKIP
    [1, 2, 2, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from minivess.adapters import ADAPTERS, AdapterConfig, Blend, ModelAdapter, Precision, SizeRule
from minivess.config.validation import describe_validation_error
from minivess.errors import ConfigError

SpatialSize = tuple[
    Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]
]
"""A spatial size (H, W, D) in voxels, in MONAI's axis order."""


class ModelConfig(BaseModel):
    """The adapter to build and its hyper-parameters.

    After validation ``params`` holds the adapter config's full JSON dump (defaults filled in),
    which is what checkpoints and tracked runs record.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )

    name: str = "segresnet"
    """Registered adapter name; see ``minivess.adapters.ADAPTERS.names()``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Hyper-parameters of the adapter's ``config_class``; unset ones take its defaults."""

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            ADAPTERS.get(name)
        except ConfigError as exc:  # a ValueError lets pydantic add the field path
            raise ValueError(str(exc)) from None
        return name

    @field_validator("params")
    @classmethod
    def _adapter_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name failed; its error already says why
            return params
        adapter = ADAPTERS.get(name)
        try:
            config = adapter.config_class.model_validate(params)
        except ValidationError as exc:
            hint = ""
            if any(err["type"] == "extra_forbidden" for err in exc.errors()):
                hint = " (parameters of another network? choose it with model=<name>)"
            raise ValueError(
                f"invalid {name} parameters: {describe_validation_error(exc)}{hint}"
            ) from None
        return config.model_dump(mode="json")

    @property
    def adapter_class(self) -> type[ModelAdapter]:
        """The registered adapter class."""
        return ADAPTERS.get(self.name)

    def adapter_config(self) -> AdapterConfig:
        """``params`` as the adapter's validated config object."""
        return self.adapter_class.config_class.model_validate(self.params)

    def size_rule(self) -> SizeRule:
        """Spatial sizes the network accepts, read without building the network.

        ``ModelAdapter.size_rule`` is an instance property that only needs the config, and
        building a network takes seconds (SwinUNETR), so the property is evaluated on an
        instance whose ``__init__`` (which builds the network) is skipped.
        """
        probe = object.__new__(self.adapter_class)
        probe._config = self.adapter_config()
        return probe.size_rule

    def check_size(self, shape: Sequence[int], field: str) -> None:
        """Raise ``ValueError`` naming ``field`` if ``shape`` breaks the adapter's size rule.

        Args:
            shape: Spatial size (H, W, D).
            field: Dotted name of the field holding ``shape``, for the message.

        Raises:
            ValueError: ``shape`` is not accepted; the message gives the nearest valid size.
        """
        rule = self.size_rule()
        if not rule.valid(shape):
            raise ValueError(
                f"{field} {tuple(shape)} does not suit {self.name}: every axis must be a "
                f"multiple of {rule.divisor} and at least {rule.minimum} "
                f"(nearest valid size: {rule.pad_to_valid(shape)})"
            )


class InferenceConfig(BaseModel):
    """Sliding-window inference over whole volumes (validation, evaluation, serving)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )

    roi_size: SpatialSize = (96, 96, 16)
    """Window (H, W, D); must satisfy the adapter's size rule."""
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    """Fraction of each window shared with its neighbour."""
    sw_batch_size: int = Field(default=1, ge=1)
    """Windows per forward pass."""
    precision: Precision = "auto"
    """``fp32``, ``bf16``, ``fp16`` (CUDA only) or ``auto`` (bf16 where the device runs it
    natively, else fp32)."""
    blend: Blend = "constant"
    """How overlapping windows are averaged: ``constant`` (equal weights, as a plain MONAI
    ``sliding_window_inference`` does) or ``gaussian`` (down-weights window edges). On unseen
    VesselNN volumes both gave the same Dice (docs/benchmarks.md); ``constant`` keeps masks
    equal to the plain MONAI call. Checkpoints saved before this setting existed keep the
    ``gaussian`` blending they were validated with."""
