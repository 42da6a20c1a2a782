"""The model adapter contract: the only thing the trainer, evaluator and servers know about a model.

An adapter wraps one network family behind a validated pydantic config, a size rule its inputs
must follow, and sliding-window prediction of whole volumes of any size. Adding a model to
minivess is one adapter class plus one ``minivess.adapters`` entry point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from minivess.adapters.inference import Precision, sliding_window_predict
from minivess.errors import ConfigError

if TYPE_CHECKING:
    from minivess.adapters.checkpoint import CheckpointValue


class AdapterConfig(BaseModel):
    """Fields every adapter config has; adapters subclass it with their own hyper-parameters.

    Unknown fields are rejected so that a typo fails loudly instead of being ignored. The
    docstring under each field becomes its JSON-schema description.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    in_channels: int = Field(1, ge=1)
    """Image channels (1 for two-photon intensity)."""
    out_channels: int = Field(2, ge=2)
    """Classes predicted with a softmax over the channel axis: 0 background, 1 vessel, ..."""


@dataclass(frozen=True)
class SizeRule:
    """Spatial sizes a network accepts: per axis, a multiple of ``divisor`` and ``>= minimum``.

    Args:
        divisor: Per-axis divisor (H, W, D), e.g. ``(32, 32, 32)`` for four 2x downsamplings
            after a stride-2 patch embedding; 1 for an axis the network never downsamples.
        minimum: Per-axis smallest accepted size.

    Example:
        >>> rule = SizeRule.uniform(8)
        >>> rule.valid((16, 24, 8)), rule.pad_to_valid((37, 41, 5))
        (True, (40, 48, 8))
    """

    divisor: tuple[int, int, int]
    minimum: tuple[int, int, int]

    @classmethod
    def uniform(cls, divisor: int, minimum: int | None = None) -> SizeRule:
        """The same rule on all three axes (``minimum`` defaults to ``divisor``)."""
        low = divisor if minimum is None else minimum
        return cls((divisor,) * 3, (low,) * 3)

    def valid(self, shape: Sequence[int]) -> bool:
        """Whether the spatial ``shape`` (H, W, D) satisfies the rule."""
        _check_spatial(shape)
        return all(
            s >= low and s % div == 0
            for s, div, low in zip(shape, self.divisor, self.minimum, strict=True)
        )

    def pad_to_valid(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The smallest valid spatial shape that is at least ``shape`` on every axis."""
        _check_spatial(shape)
        return tuple(  # type: ignore[return-value]
            max(low, -(-s // div) * div)
            for s, div, low in zip(shape, self.divisor, self.minimum, strict=True)
        )


def _check_spatial(shape: Sequence[int]) -> None:
    if len(shape) != 3:
        raise ValueError(f"expected a spatial shape (H, W, D), got {tuple(shape)}")


class ModelAdapter(ABC):
    """A segmentation network behind the interface the rest of minivess relies on.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`build_network` and
    :attr:`size_rule`. Build instances with :meth:`from_config` (or
    :func:`minivess.adapters.build_adapter` by name) so the config is validated.

    The invariant every adapter keeps: ``adapter.network(x)`` is ``adapter.forward(x)``; it maps
    ``(B, in_channels, H, W, D)`` to logits ``(B, out_channels, H, W, D)`` for any valid
    ``(H, W, D)``, so the trainer, exporter and sliding-window inference only need ``network``.

    Args:
        config: An instance of ``config_class`` (already validated).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[AdapterConfig]]
    bf16_on_cpu: ClassVar[bool] = False
    """Whether ``precision="auto"`` uses bf16 autocast on CPUs with native bf16. Set it only
    where it was measured faster with matching argmax: it helps convolutions (SegResNet ~3x)
    and hurts attention-heavy models (SwinUNETR ~1.6x slower)."""
    cpu_window_threads: ClassVar[bool] = False
    """Whether sliding-window inference on CPU runs windows side by side, one core each
    (:mod:`minivess.adapters.window_threads`), instead of one at a time on every core. Set it
    only for networks whose ``forward`` may run on two threads at once and where it was
    measured faster."""
    onnx_fixed_size: ClassVar[bool] = False
    """Whether :meth:`export_onnx` freezes the spatial size to the traced example (the
    sliding-window ROI), so the graph accepts only that size; false keeps H, W, D dynamic."""

    def __init__(self, config: AdapterConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}; use {type(self).__name__}.from_config()"
            )
        self._config = config
        self._network = self.build_network(config)

    @classmethod
    def from_config(cls, params: Mapping[str, Any] | BaseModel | None = None) -> Self:
        """Validate ``params`` against ``config_class`` and build the adapter.

        Args:
            params: Hyper-parameters as a mapping, a pydantic model with the same fields, or
                ``None`` for all defaults.

        Returns:
            The adapter with a freshly initialised network.

        Raises:
            ConfigError: A field is unknown or invalid; the message names each field.
        """
        if isinstance(params, cls.config_class):
            return cls(params)
        raw = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
        try:
            config = cls.config_class.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_describe_errors(cls.name, exc)) from None
        return cls(config)

    @abstractmethod
    def build_network(self, config: AdapterConfig) -> nn.Module:
        """Construct the torch module described by ``config`` (random initial weights)."""

    @property
    @abstractmethod
    def size_rule(self) -> SizeRule:
        """Spatial input sizes the network accepts."""

    @property
    def config(self) -> AdapterConfig:
        """The validated hyper-parameters this adapter was built from."""
        return self._config

    @property
    def network(self) -> nn.Module:
        """The torch module: train it, move it, read and load its ``state_dict``."""
        return self._network

    @property
    def in_channels(self) -> int:
        """Channels the network expects."""
        return self._config.in_channels

    @property
    def out_channels(self) -> int:
        """Classes predicted (softmax over the channel axis; 0 is background)."""
        return self._config.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W, D)`` for a batch ``(B, in_channels, H, W, D)``."""
        return self._network(x)

    def valid_size(self, shape: Sequence[int]) -> bool:
        """Whether the spatial ``shape`` (H, W, D) can go through the network unpadded."""
        return self.size_rule.valid(shape)

    def pad_to_valid(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The smallest spatial shape the network accepts that covers ``shape``."""
        return self.size_rule.pad_to_valid(shape)

    def predict_volume(
        self,
        image: np.ndarray | torch.Tensor,
        *,
        roi_size: Sequence[int],
        overlap: float | Sequence[float] = 0.25,
        sw_batch_size: int = 1,
        precision: Precision = "auto",
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Class probabilities for a whole normalised volume of any size.

        Windows of ``roi_size`` are blended by MONAI's ``sliding_window_inference``, with
        equal weights unless :func:`~minivess.adapters.window_blending` says ``gaussian``
        (prediction sets it from the model's ``inference.blend``); a volume smaller than the
        window is padded and cropped back, so the output always has exactly the input's
        spatial shape. The network is put in eval mode for the call and its previous mode
        restored.

        Args:
            image: ``(C, H, W, D)`` float array or tensor, already intensity-normalised.
            roi_size: Window (H, W, D); must satisfy :attr:`size_rule`. Axes longer than the
                volume shrink to the smallest valid size covering it.
            overlap: Fraction of each window shared with its neighbour (one value or per axis).
            sw_batch_size: Windows per forward pass.
            precision: ``"fp32"`` (eager float32), ``"bf16"``, ``"fp16"`` (CUDA only) or
                ``"auto"`` (bf16 on CPU only if :attr:`bf16_on_cpu`); see
                :func:`minivess.adapters.inference.resolve_precision`.
            device: Where the network runs; ``None`` keeps it where it is. The network is moved
                there and stays.

        Returns:
            float32 CPU tensor ``(out_channels, H, W, D)`` of softmax probabilities.

        Raises:
            DataError: ``image`` is not ``(in_channels, H, W, D)``.
            ConfigError: ``roi_size`` breaks the size rule, or ``precision`` is unknown or not
                available on ``device``.

        Example:
            >>> adapter = build_adapter("segresnet", {"init_filters": 8})  # doctest: +SKIP
            >>> probs = adapter.predict_volume(img, roi_size=(96, 96, 16))  # doctest: +SKIP
            >>> mask = class_mask(probs)  # argmax(0), fast  # doctest: +SKIP
        """
        if device is not None:
            self._network.to(device)
        return sliding_window_predict(
            self,
            image,
            roi_size=roi_size,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            precision=precision,
        )

    def export_onnx(self, path: str | Path, *, example_size: Sequence[int]) -> None:
        """Write the network as an ONNX graph ``image (B, C, H, W, D) -> logits``.

        The default traces with batch and spatial axes dynamic, which suits fully convolutional
        networks; an adapter whose graph depends on the input shape sets
        :attr:`onnx_fixed_size` (or overrides this). Metadata, atomic writing and caching are
        added by :func:`minivess.export.export_onnx`, the function to call.

        Args:
            path: Destination file.
            example_size: Spatial size (H, W, D) to trace with (the sliding-window ROI); must
                satisfy :attr:`size_rule`.

        Raises:
            ExportError: The exporter failed.
        """
        from minivess.adapters.onnx import export_network

        export_network(
            self._network,
            Path(path),
            in_channels=self.in_channels,
            example_size=example_size,
            dynamic_spatial=not self.onnx_fixed_size,
        )

    def save_checkpoint(
        self,
        path: str | Path,
        *,
        data_version: str | None = None,
        extra: Mapping[str, CheckpointValue] | None = None,
    ) -> Path:
        """Write a self-describing checkpoint; see :func:`minivess.adapters.save_checkpoint`."""
        from minivess.adapters.checkpoint import save_checkpoint

        return save_checkpoint(self, path, data_version=data_version, extra=extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"


def _describe_errors(adapter: str, exc: ValidationError) -> str:
    """One line naming every bad field, e.g. ``feature_size: must be divisible by 12``."""
    parts = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in err["loc"])
        parts.append(f"{field}: {message}" if field else message)
    return f"invalid {adapter} config: " + "; ".join(parts)
