"""Drop-in replacements for slow PyTorch CPU kernels; same results, same state dict.

PyTorch's CPU trilinear upsampling is 4-8x faster in the ``channels_last_3d`` memory format
than in the default contiguous one (forward and backward, fp32 and bf16), while SegResNet
trains fastest with contiguous activations. :class:`ChannelsLastUpsample` runs just the
upsampling (and its gradient) in ``channels_last_3d`` and hands back the caller's layout, so
the network around it is unchanged. :func:`use_channels_last_upsampling` swaps it into a
built network; upsampling modules hold no parameters, so checkpoints load either way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS_LAST = torch.channels_last_3d


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (5-D) in ``channels_last_3d`` strides, also when it has a single channel.

    ``x.contiguous(memory_format=torch.channels_last_3d)`` returns a one-channel tensor
    unchanged (its strides satisfy both layouts), and oneDNN then picks the contiguous layout
    for the first convolution's output, so the whole first block runs in the slow layout and
    mixes layouts in its residual add. Restriding makes the layout explicit.

    Example:
        >>> as_channels_last(torch.zeros(1, 1, 4, 4, 2)).stride()
        (32, 1, 8, 2, 1)
    """
    if x.shape[1] != 1:
        return x.contiguous(memory_format=CHANNELS_LAST)
    _, c, d, h, w = x.shape
    return x.contiguous().as_strided(x.shape, (c * d * h * w, 1, h * w * c, w * c, c))


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``x`` is laid out in (contiguous where both would fit)."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=CHANNELS_LAST):
        return CHANNELS_LAST
    return torch.contiguous_format


def _interpolate(x: torch.Tensor, scale: tuple[float, ...], align_corners: bool) -> torch.Tensor:
    """Trilinear interpolation computed in ``channels_last_3d``, returned in ``x``'s layout."""
    y = F.interpolate(
        x.contiguous(memory_format=CHANNELS_LAST),
        scale_factor=scale,
        mode="trilinear",
        align_corners=align_corners,
    )
    return y.contiguous(memory_format=_layout(x))


class _ChannelsLastInterpolate(torch.autograd.Function):
    """Trilinear interpolation whose forward and backward both run in ``channels_last_3d``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scale: tuple[float, float, float], align_corners: bool
    ) -> torch.Tensor:
        ctx.layout = _layout(x)
        ctx.input_size = tuple(x.shape)
        ctx.scale, ctx.align_corners = scale, align_corners
        y = _interpolate(x, scale, align_corners)
        ctx.output_size = tuple(y.shape[2:])
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad_input = torch.ops.aten.upsample_trilinear3d_backward(
            grad.contiguous(memory_format=CHANNELS_LAST),
            list(ctx.output_size),
            list(ctx.input_size),
            ctx.align_corners,
            *ctx.scale,
        )
        return grad_input.contiguous(memory_format=ctx.layout), None, None


class ChannelsLastUpsample(nn.Upsample):
    """``nn.Upsample(mode="trilinear", scale_factor=s)`` computed in ``channels_last_3d``.

    Returns what ``nn.Upsample`` returns, in the input's own memory format. Graph exporters
    and ``torch.compile`` see the plain ``F.interpolate`` (layouts mean nothing there).

    Example:
        >>> up = ChannelsLastUpsample(scale_factor=2, mode="trilinear")
        >>> up(torch.zeros(1, 4, 2, 2, 2)).shape
        torch.Size([1, 4, 4, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` upsampled; a 5-D CPU tensor is interpolated in ``channels_last_3d``."""
        plain = (
            x.dim() != 5
            or x.device.type != "cpu"
            or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling()
        )
        if plain:
            return super().forward(x)
        scale = _scales(self.scale_factor)
        align = bool(self.align_corners)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastInterpolate.apply(x, scale, align)
        return _interpolate(x, scale, align)


def _scales(scale_factor: Any) -> tuple[float, float, float]:
    if isinstance(scale_factor, int | float):
        return (float(scale_factor),) * 3
    return tuple(float(s) for s in scale_factor)  # type: ignore[return-value]


def use_channels_last_upsampling(network: nn.Module) -> int:
    """Swap every trilinear ``nn.Upsample`` with a scale factor for :class:`ChannelsLastUpsample`.

    Returns:
        How many modules were swapped (upsampling to a fixed ``size`` is left alone).
    """
    swapped = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Upsample or child.mode != "trilinear":
                continue
            if child.scale_factor is None or child.recompute_scale_factor:
                continue
            fast = ChannelsLastUpsample(
                scale_factor=child.scale_factor, mode="trilinear", align_corners=child.align_corners
            )
            setattr(parent, name, fast)
            swapped += 1
    return swapped
