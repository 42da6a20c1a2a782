from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SegResNet
from torch import nn

from minivess.adapters import build_adapter
from minivess.adapters.layers import (
    ChannelsLastUpsample,
    as_channels_last,
    use_channels_last_upsampling,
)

CL = torch.channels_last_3d


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_upsample_matches_torch_forward_and_backward_in_the_callers_layout(dtype, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 5, 4, dtype=dtype).contiguous(memory_format=layout)
    plain, fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = nn.Upsample(scale_factor=2, mode="trilinear")(plain)
    got = ChannelsLastUpsample(scale_factor=2, mode="trilinear")(fast)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)

    assert got.shape == (2, 8, 12, 10, 8)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fast.grad, plain.grad, atol=1e-6, rtol=1e-6)
    assert got.is_contiguous(memory_format=layout)
    assert fast.grad.is_contiguous(memory_format=layout)


def test_upsample_without_grad_and_with_align_corners_matches_torch():
    x = torch.randn(1, 3, 4, 4, 2)
    expected = nn.Upsample(scale_factor=(2, 2, 3), mode="trilinear", align_corners=True)(x)
    fast = ChannelsLastUpsample(scale_factor=(2, 2, 3), mode="trilinear", align_corners=True)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected)


def test_segresnet_swaps_its_upsampling_and_keeps_monais_outputs_and_state_dict():
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", {"init_filters": 4, "num_groups": 4})
    monai = SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        init_filters=4,
        norm=("GROUP", {"num_groups": 4}),
    )
    monai.load_state_dict(adapter.network.state_dict())  # same keys: nothing new to save
    ups = [m for m in adapter.network.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3
    assert all(isinstance(m, ChannelsLastUpsample) for m in ups)

    x = torch.randn(1, 1, 16, 16, 8)
    torch.testing.assert_close(adapter.network(x), monai(x), atol=1e-5, rtol=1e-5)


def test_only_trilinear_upsampling_by_a_scale_factor_is_swapped():
    network = nn.Sequential(
        nn.Upsample(scale_factor=2, mode="trilinear"),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Upsample(size=(4, 4, 4), mode="trilinear"),
    )
    assert use_channels_last_upsampling(network) == 1
    assert [type(m) for m in network] == [ChannelsLastUpsample, nn.Upsample, nn.Upsample]


@pytest.mark.parametrize("channels", [1, 3])
def test_as_channels_last_lays_out_channels_last_even_for_one_channel(channels):
    x = torch.randn(2, channels, 4, 6, 8)
    y = as_channels_last(x)
    assert torch.equal(x, y)
    assert y.stride(1) == 1  # channels innermost: what oneDNN reads as channels_last
    assert y.is_contiguous(memory_format=CL)


def test_bf16_prediction_runs_every_convolution_channels_last(tiny_segresnet):
    # Given x.contiguous(memory_format=channels_last_3d), a one-channel window kept its
    # contiguous strides, the first convolution answered in the contiguous layout and the
    # first block mixed layouts in its residual add (~12% of a bf16 window on this CPU).
    layouts = []

    def record(_module, _inputs, output):
        layouts.append(output.stride(1) == 1 and output.shape[1] > 1)

    for module in tiny_segresnet.network.modules():
        if isinstance(module, nn.Conv3d) and module.out_channels > 2:
            module.register_forward_hook(record)
    tiny_segresnet.predict_volume(torch.randn(1, 16, 16, 8), roi_size=(16, 16, 8), precision="bf16")
    assert layouts
    assert all(layouts)
