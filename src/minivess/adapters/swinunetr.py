"""MONAI SwinUNETR (Hatamizadeh et al. 2022): a Swin transformer encoder with a CNN decoder."""

from __future__ import annotations

from monai.networks.nets import SwinUNETR
from pydantic import Field, field_validator
from torch import nn

from minivess.adapters.base import AdapterConfig, ModelAdapter, SizeRule


class SwinUNETRConfig(AdapterConfig):
    """Hyper-parameters of :class:`SwinUNETRAdapter`.

    MONAI 1.6 dropped ``img_size`` from the constructor: the network takes any input whose
    axes are multiples of 32, so there is no such field here.
    """

    feature_size: int = Field(24, ge=12)
    """Embedding width of the first stage; a multiple of 12 (12, 24, 36, 48)."""
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout in the transformer MLPs."""
    attn_drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on attention weights."""
    dropout_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    """Stochastic depth rate."""
    use_checkpoint: bool = True
    """Gradient checkpointing: recompute transformer blocks in backward to save memory."""
    use_v2: bool = False
    """SwinUNETR-V2: a residual convolution block before each Swin stage."""

    @field_validator("feature_size")
    @classmethod
    def _multiple_of_12(cls, value: int) -> int:
        if value % 12:
            lower, upper = value // 12 * 12, value // 12 * 12 + 12
            suggestion = f"{lower} or {upper}" if lower else f"{upper}"
            raise ValueError(
                f"must be divisible by 12 (SwinUNETR splits it over its attention heads); "
                f"got {value}, try {suggestion}"
            )
        return value


class SwinUNETRAdapter(ModelAdapter):
    """SwinUNETR for 3D volumes: axes multiples of 32, at least 64 x 64 x 32.

    A 32^3 input leaves a single bottleneck voxel, which instance norm rejects in training
    (and zeroes in eval), hence the 64 minimum in-plane; thin stacks are padded to depth 32.
    """

    name = "swinunetr"
    config_class = SwinUNETRConfig
    onnx_fixed_size = True  # only the dynamo exporter handles it, and only at one spatial size

    @property
    def config(self) -> SwinUNETRConfig:
        """The validated hyper-parameters."""
        return self._config  # type: ignore[return-value]

    def build_network(self, config: AdapterConfig) -> nn.Module:
        """A MONAI ``SwinUNETR`` for 3D volumes."""
        assert isinstance(config, SwinUNETRConfig)
        return SwinUNETR(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            feature_size=config.feature_size,
            drop_rate=config.drop_rate,
            attn_drop_rate=config.attn_drop_rate,
            dropout_path_rate=config.dropout_path_rate,
            use_checkpoint=config.use_checkpoint,
            use_v2=config.use_v2,
            spatial_dims=3,
        )

    @property
    def size_rule(self) -> SizeRule:
        """Multiples of 32 (a stride-2 patch embedding, four 2x merges), at least 64 x 64 x 32."""
        return SizeRule(divisor=(32, 32, 32), minimum=(64, 64, 32))
