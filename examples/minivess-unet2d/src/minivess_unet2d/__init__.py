"""A 2D U-Net applied slice by slice to 3D volumes, plugged into minivess by an entry point.

Two-photon stacks are thin (10-26 slices in VesselNN) and anisotropic (~5 um between slices,
<1 um in-plane), so segmenting each z-slice on its own is the natural 2D baseline for the 3D
adapters. The network folds the depth axis into the batch, so it takes and returns the same
``(B, C, H, W, D)`` tensors as every other adapter and the trainer needs no special case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from monai.networks.nets import UNet
from pydantic import Field, model_validator
from torch import nn

from minivess.adapters import AdapterConfig, ModelAdapter, Precision, SizeRule

__all__ = ["SliceWise2D", "UNet2DAdapter", "UNet2DConfig"]


class UNet2DConfig(AdapterConfig):
    """Hyper-parameters of :class:`UNet2DAdapter` (MONAI ``UNet`` with ``spatial_dims=2``)."""

    channels: tuple[int, ...] = Field((16, 32, 64, 128, 256), min_length=2)
    """Feature channels per level, finest first."""
    strides: tuple[int, ...] = (2, 2, 2, 2)
    """Downsampling factor between levels; one entry fewer than ``channels``."""
    num_res_units: int = Field(2, ge=0)
    """Residual units per block (0 for plain convolutions)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout probability inside each block."""

    @model_validator(mode="after")
    def _check_levels(self) -> Self:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries, "
                f"got {len(self.strides)}"
            )
        return self


class SliceWise2D(nn.Module):
    """Run a 2D network on every depth slice of ``(B, C, H, W, D)`` input.

    Args:
        net: A 2D network mapping ``(N, C, H, W)`` to ``(N, K, H, W)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W, D)``: depth folded into the batch and unfolded again."""
        b, c, h, w, d = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        out = self.net(slices)
        return out.reshape(b, d, out.shape[1], h, w).permute(0, 2, 3, 4, 1)


class UNet2DAdapter(ModelAdapter):
    """Slice-wise 2D U-Net: H and W multiples of ``prod(strides)``, any depth.

    Example:
        >>> adapter = UNet2DAdapter.from_config({"channels": [8, 16, 32], "strides": [2, 2]})
        >>> adapter.forward(torch.zeros(1, 1, 16, 16, 3)).shape
        torch.Size([1, 2, 16, 16, 3])
    """

    name = "unet2d"
    config_class = UNet2DConfig

    @property
    def config(self) -> UNet2DConfig:
        """The validated hyper-parameters."""
        return self._config  # type: ignore[return-value]

    def build_network(self, config: AdapterConfig) -> nn.Module:
        """MONAI's 2D ``UNet`` wrapped to take and return 3D batches."""
        assert isinstance(config, UNet2DConfig)
        return SliceWise2D(
            UNet(
                spatial_dims=2,
                in_channels=config.in_channels,
                out_channels=config.out_channels,
                channels=config.channels,
                strides=config.strides,
                num_res_units=config.num_res_units,
                dropout=config.dropout,
            )
        )

    @property
    def size_rule(self) -> SizeRule:
        """In-plane multiples of ``prod(strides)``, at least twice that; depth unrestricted.

        Twice, because instance norm needs more than one pixel at the coarsest level in training.
        """
        div = math.prod(self.config.strides)
        return SizeRule(divisor=(div, div, 1), minimum=(2 * div, 2 * div, 1))

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
        """Probabilities ``(C, H, W, D)`` slice by slice; see ``ModelAdapter.predict_volume``.

        Slices are predicted independently, so windows overlap in-plane only: overlapping in
        depth would recompute identical slices. ``roi_size[2]`` is how many slices go through
        the network together.
        """
        per_axis = [overlap] * 3 if isinstance(overlap, int | float) else list(overlap)
        return super().predict_volume(
            image,
            roi_size=roi_size,
            overlap=(per_axis[0], per_axis[1], 0.0),
            sw_batch_size=sw_batch_size,
            precision=precision,
            device=device,
        )
