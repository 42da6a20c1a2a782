from __future__ import annotations

import pytest
import torch

from minivess.adapters import build_adapter
from minivess.adapters.swinunetr import SwinUNETRAdapter
from minivess.errors import ConfigError


def test_feature_size_must_be_a_multiple_of_12():
    with pytest.raises(ConfigError, match=r"feature_size: .*divisible by 12.*try 12 or 24"):
        build_adapter("swinunetr", {"feature_size": 13})


def test_img_size_is_not_a_field():
    with pytest.raises(ConfigError, match="img_size"):
        build_adapter("swinunetr", {"img_size": (64, 64, 32)})


def test_gradient_checkpointing_is_on_by_default():
    adapter = build_adapter("swinunetr", {"feature_size": 12})
    assert adapter.config.use_checkpoint
    assert isinstance(adapter, SwinUNETRAdapter)


def test_size_rule_needs_multiples_of_32_and_room_at_the_bottleneck():
    adapter = build_adapter("swinunetr", {"feature_size": 12})
    assert adapter.valid_size((64, 64, 32))
    assert not adapter.valid_size((32, 32, 32))
    assert not adapter.valid_size((64, 64, 16))
    assert adapter.pad_to_valid((37, 41, 11)) == (64, 64, 32)
    assert adapter.pad_to_valid((512, 512, 25)) == (512, 512, 32)


@pytest.mark.slow
@pytest.mark.parametrize("use_v2", [False, True])
def test_smallest_valid_patch_trains_and_odd_volumes_predict(use_v2):
    torch.manual_seed(0)
    adapter = build_adapter("swinunetr", {"feature_size": 12, "use_v2": use_v2})
    logits = adapter.forward(torch.randn(1, 1, 64, 64, 32))
    assert logits.shape == (1, 2, 64, 64, 32)
    logits.float().mean().backward()

    probs = adapter.predict_volume(torch.randn(1, 37, 41, 11), roi_size=(64, 64, 32))
    assert probs.shape == (2, 37, 41, 11)
