from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from minivess.adapters import (
    ModelAdapter,
    SizeRule,
    build_adapter,
    class_mask,
    resolve_precision,
    window_blending,
)
from minivess.adapters.inference import cpu_has_native_bf16
from minivess.adapters.segresnet import SegResNetConfig
from minivess.errors import ConfigError, DataError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("shape", "valid", "padded"),
    [
        ((8, 16, 8), True, (8, 16, 8)),
        ((37, 41, 11), False, (40, 48, 16)),
        ((1, 1, 1), False, (8, 8, 8)),
        ((0, 8, 8), False, (8, 8, 8)),
    ],
)
def test_size_rule_validates_and_pads_each_axis(shape, valid, padded):
    rule = SizeRule.uniform(8)
    assert rule.valid(shape) is valid
    assert rule.pad_to_valid(shape) == padded
    assert rule.valid(rule.pad_to_valid(shape))


def test_size_rule_keeps_minimum_and_per_axis_divisors():
    rule = SizeRule(divisor=(32, 32, 1), minimum=(64, 64, 1))
    assert rule.pad_to_valid((33, 100, 5)) == (64, 128, 5)
    assert not rule.valid((32, 64, 5))
    with pytest.raises(ValueError, match="spatial shape"):
        rule.valid((64, 64))


def test_adapter_size_helpers_follow_its_rule(tiny_segresnet):
    assert tiny_segresnet.valid_size((12, 16, 4))
    assert not tiny_segresnet.valid_size((13, 16, 4))
    assert tiny_segresnet.pad_to_valid((37, 41, 11)) == (40, 44, 12)


def test_from_config_accepts_mapping_model_or_defaults():
    config = SegResNetConfig(init_filters=8)
    from_model = build_adapter("segresnet", config)
    assert from_model.config is config
    assert build_adapter("segresnet", {"init_filters": 8}).config == config
    assert build_adapter("segresnet").config == SegResNetConfig()


def test_unknown_config_field_is_named():
    with pytest.raises(ConfigError, match="init_filter"):
        build_adapter("segresnet", {"init_filter": 8})


def test_constructor_needs_its_own_config_class():
    cls = type(build_adapter("segresnet", SegResNetConfig(init_filters=8)))
    with pytest.raises(TypeError, match="from_config"):
        cls(object())  # type: ignore[arg-type]


def test_predict_volume_returns_probabilities_of_exactly_the_input_shape(tiny_segresnet, odd_image):
    probs = tiny_segresnet.predict_volume(odd_image, roi_size=(32, 32, 8), precision="fp32")
    assert probs.shape == (2, 37, 41, 11)
    assert probs.dtype == torch.float32
    assert probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(0), torch.ones(37, 41, 11))


def _plain_monai(adapter, image, roi, mode):
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            torch.as_tensor(image)[None],
            roi_size=roi,
            sw_batch_size=1,
            predictor=adapter.network.eval(),
            overlap=0.25,
            mode=mode,
        )
    return torch.softmax(torch.as_tensor(logits), dim=1)[0]


def test_default_blending_is_the_plain_monai_sliding_window(tiny_segresnet, odd_image):
    """Without a blend set, fp32 probabilities equal a plain MONAI tutorial call's."""
    probs = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision="fp32")
    plain = _plain_monai(tiny_segresnet, odd_image, (16, 16, 8), "constant")
    torch.testing.assert_close(probs, plain, atol=1e-6, rtol=0)


def test_gaussian_blending_is_monai_gaussian_and_changes_overlaps(tiny_segresnet, odd_image):
    with window_blending("gaussian"):
        gaussian = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision="fp32")
    plain = _plain_monai(tiny_segresnet, odd_image, (16, 16, 8), "gaussian")
    torch.testing.assert_close(gaussian, plain, atol=1e-6, rtol=0)
    constant = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision="fp32")
    assert (gaussian - constant).abs().max() > 1e-4  # overlapping windows are weighted otherwise
    # The setting ends with its block.
    torch.testing.assert_close(
        tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision="fp32"), constant
    )


def test_unknown_blending_is_refused():
    with (
        pytest.raises(ConfigError, match=r"unknown blend 'median'.*constant, gaussian"),
        window_blending("median"),  # type: ignore[arg-type]
    ):
        pass


def test_predict_volume_handles_volumes_smaller_than_the_window(tiny_segresnet):
    image = np.random.default_rng(0).normal(size=(1, 5, 6, 3)).astype(np.float32)
    probs = tiny_segresnet.predict_volume(image, roi_size=(64, 64, 16), precision="fp32")
    assert probs.shape == (2, 5, 6, 3)


def test_bf16_path_agrees_with_fp32(tiny_segresnet, odd_image):
    roi = tiny_segresnet.pad_to_valid(odd_image.shape[1:])  # one window: one forward each
    fp32 = tiny_segresnet.predict_volume(odd_image, roi_size=roi, precision="fp32")
    bf16 = tiny_segresnet.predict_volume(odd_image, roi_size=roi, precision="bf16")
    agreement = (fp32.argmax(0) == bf16.argmax(0)).float().mean().item()
    assert agreement >= 0.99
    assert bf16.dtype == torch.float32


def test_predict_volume_leaves_the_network_trainable(tiny_segresnet):
    network = tiny_segresnet.network
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    tiny_segresnet.predict_volume(torch.randn(1, 8, 8, 4), roi_size=(8, 8, 4), precision="bf16")
    assert network.training
    assert all(p.is_contiguous() for p in network.parameters())
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key])
    loss = tiny_segresnet.forward(torch.randn(1, 1, 8, 8, 4)).sum()
    loss.backward()
    assert all(p.grad is not None for p in network.parameters())


def test_predict_volume_rejects_roi_outside_the_size_rule(tiny_segresnet, odd_image):
    with pytest.raises(ConfigError, match=r"roi_size \(30, 32, 8\).*try \(32, 32, 8\)"):
        tiny_segresnet.predict_volume(odd_image, roi_size=(30, 32, 8))


@pytest.mark.parametrize("shape", [(37, 41, 11), (2, 8, 8, 4), (1, 8, 8)])
def test_predict_volume_rejects_images_without_the_channel_axis(tiny_segresnet, shape):
    with pytest.raises(DataError, match="image-shape"):
        tiny_segresnet.predict_volume(torch.zeros(shape), roi_size=(8, 8, 4))


def test_precision_names_are_checked():
    with pytest.raises(ConfigError, match="fp32"):
        resolve_precision("float16", CPU, bf16_on_cpu=True)
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_precision("fp16", CPU, bf16_on_cpu=True)
    assert resolve_precision("fp32", CPU, bf16_on_cpu=True) == "fp32"
    assert resolve_precision("bf16", CPU, bf16_on_cpu=False) == "bf16"


def test_auto_precision_uses_cpu_bf16_only_where_the_adapter_gains():
    fast = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", CPU, bf16_on_cpu=True) == fast
    assert resolve_precision("auto", CPU, bf16_on_cpu=False) == "fp32"
    assert build_adapter("segresnet").bf16_on_cpu
    assert not build_adapter("swinunetr", {"feature_size": 12}).bf16_on_cpu


def test_native_bf16_detection_matches_linux_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this OS")
    flags = cpuinfo.read_text().split()
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_predict_volume_on_cuda_returns_cpu_probabilities(tiny_segresnet, odd_image, precision):
    reference = tiny_segresnet.predict_volume(odd_image, roi_size=(16, 16, 8), precision="fp32")
    probs = tiny_segresnet.predict_volume(
        odd_image, roi_size=(16, 16, 8), precision=precision, device="cuda"
    )
    assert probs.device.type == "cpu"
    assert probs.shape == (2, 37, 41, 11)
    assert (probs.argmax(0) == reference.argmax(0)).float().mean() >= 0.99


def test_adapter_is_the_documented_abstract_interface():
    assert issubclass(type(build_adapter("segresnet")), ModelAdapter)
    with pytest.raises(TypeError):
        ModelAdapter(SegResNetConfig())  # type: ignore[abstract]


@pytest.mark.parametrize("classes", [1, 2, 3, 5])
def test_class_mask_is_argmax_over_the_class_axis_as_uint8(classes):
    generator = torch.Generator().manual_seed(classes)
    probs = torch.softmax(torch.randn(classes, 9, 8, 7, generator=generator), dim=0)
    probs[:, 0, 0, 0] = 1.0 / classes  # an exact tie everywhere: the lowest class wins
    probs[:, 1, 0, 0] = torch.linspace(0, 1, classes).flip(0)
    mask = class_mask(probs)
    assert mask.dtype == torch.uint8
    assert torch.equal(mask.long(), probs.argmax(0))
    assert mask[0, 0, 0] == 0


def test_class_mask_refuses_more_classes_than_uint8_holds():
    with pytest.raises(ValueError, match="1 to 256 classes"):
        class_mask(torch.zeros(257, 2))
