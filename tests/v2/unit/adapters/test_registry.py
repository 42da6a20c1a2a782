from __future__ import annotations

import pytest

from minivess.adapters import ADAPTERS, AdapterConfig, ModelAdapter, build_adapter, get_adapter
from minivess.adapters.segresnet import SegResNetAdapter
from minivess.adapters.swinunetr import SwinUNETRAdapter
from minivess.errors import ConfigError


def test_built_in_adapters_come_from_entry_points():
    assert {"segresnet", "swinunetr"} <= set(ADAPTERS.names())
    assert get_adapter("segresnet") is SegResNetAdapter
    assert get_adapter("swinunetr") is SwinUNETRAdapter


def test_unknown_adapter_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model adapter 'unetr'.*segresnet, swinunetr"):
        get_adapter("unetr")
    with pytest.raises(ConfigError, match="segresnet"):
        build_adapter("unetr", {})


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter_keeps_the_contract(name):
    cls = get_adapter(name)
    assert issubclass(cls, ModelAdapter)
    assert cls.name == name  # checkpoints store cls.name and load it back through the registry
    assert issubclass(cls.config_class, AdapterConfig)


def test_build_adapter_validates_params():
    adapter = build_adapter("segresnet", {"init_filters": 8, "dropout_prob": 0.1})
    assert adapter.config.init_filters == 8
    with pytest.raises(ConfigError, match="init_filters"):
        build_adapter("segresnet", {"init_filters": "many"})
