from __future__ import annotations

import pytest
import torch

from minivess.adapters import build_adapter
from minivess.adapters.segresnet import SegResNetAdapter
from minivess.errors import ConfigError


def test_forward_gives_two_class_logits_of_the_input_size():
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", {"init_filters": 4, "num_groups": 4})
    logits = adapter.forward(torch.randn(2, 1, 32, 32, 16))
    assert logits.shape == (2, 2, 32, 32, 16)
    assert adapter.out_channels == 2
    assert isinstance(adapter, SegResNetAdapter)


@pytest.mark.parametrize(
    ("blocks_down", "blocks_up", "divisor"), [((1, 2, 2, 4), (1, 1, 1), 8), ((1, 1, 1), (1, 1), 4)]
)
def test_size_rule_follows_the_number_of_levels(blocks_down, blocks_up, divisor):
    adapter = build_adapter(
        "segresnet",
        {"init_filters": 4, "num_groups": 4, "blocks_down": blocks_down, "blocks_up": blocks_up},
    )
    assert adapter.size_rule.divisor == (divisor,) * 3
    shape = adapter.pad_to_valid((37, 41, 11))
    assert adapter.forward(torch.zeros(1, 1, *shape)).shape[2:] == shape


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"blocks_down": (1, 2, 2), "blocks_up": (1, 1, 1)}, "blocks_up needs len"),
        ({"init_filters": 12}, "init_filters .*num_groups"),
        ({"dropout_prob": 1.0}, "dropout_prob"),
        ({"out_channels": 1}, "out_channels"),
        ({"blocks_down": []}, "blocks_down"),
    ],
)
def test_invalid_config_names_the_field(params, named):
    with pytest.raises(ConfigError, match=named):
        build_adapter("segresnet", params)


def test_config_fields_are_documented():
    schema = SegResNetAdapter.config_class.model_json_schema()["properties"]
    assert all(field.get("description") for field in schema.values())
