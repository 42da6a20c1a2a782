from __future__ import annotations

import pytest
from pydantic import ValidationError

from minivess.adapters import ADAPTERS, build_adapter
from minivess.config.model import InferenceConfig, ModelConfig


def test_default_is_segresnet_with_its_full_normalised_params() -> None:
    cfg = ModelConfig()

    assert cfg.name == "segresnet"
    assert cfg.params["init_filters"] == 16
    assert cfg.params["blocks_down"] == [1, 2, 2, 4]  # JSON-ready: what runs and checkpoints log
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg


def test_every_registered_adapter_is_accepted() -> None:
    for name in ADAPTERS.names():
        adapter = ADAPTERS.get(name)
        required = [
            f for f, info in adapter.config_class.model_fields.items() if info.is_required()
        ]
        if required:  # e.g. the ensemble: built from members, not trained from defaults
            with pytest.raises(ValidationError, match=required[0]):
                ModelConfig(name=name)
            continue
        assert ModelConfig(name=name).adapter_class is adapter
    assert {"segresnet", "swinunetr", "ensemble"} <= set(ADAPTERS.names())


def test_unknown_adapter_lists_the_registered_names() -> None:
    with pytest.raises(ValidationError) as err:
        ModelConfig(name="unet3000")

    (error,) = err.value.errors()
    assert error["loc"] == ("name",)
    assert "unet3000" in error["msg"]
    for name in ADAPTERS.names():
        assert name in error["msg"]


def test_params_are_validated_by_the_adapter_config() -> None:
    with pytest.raises(ValidationError, match=r"invalid swinunetr parameters: feature_size"):
        ModelConfig(name="swinunetr", params={"feature_size": 20})
    with pytest.raises(ValidationError, match=r"init_filters: Extra inputs are not permitted"):
        ModelConfig(name="swinunetr", params={"init_filters": 16})


def test_accepted_params_build_the_same_network_config() -> None:
    cfg = ModelConfig(name="segresnet", params={"init_filters": 8, "num_groups": 4})

    adapter = build_adapter(cfg.name, cfg.params)

    assert adapter.config == cfg.adapter_config()


@pytest.mark.parametrize(
    ("name", "params", "valid", "invalid"),
    [
        ("segresnet", {}, (96, 96, 16), (96, 96, 12)),
        ("segresnet", {"blocks_down": [1, 2], "blocks_up": [1]}, (6, 6, 2), (5, 6, 2)),
        ("swinunetr", {"feature_size": 12}, (64, 64, 32), (96, 96, 16)),
    ],
)
def test_size_rule_matches_the_built_adapter(
    name: str,
    params: dict[str, object],
    valid: tuple[int, int, int],
    invalid: tuple[int, int, int],
) -> None:
    cfg = ModelConfig(name=name, params=params)

    cfg.check_size(valid, "data.patch_size")
    with pytest.raises(ValueError, match=r"data\.patch_size \(.*\) does not suit") as err:
        cfg.check_size(invalid, "data.patch_size")
    assert "nearest valid size" in str(err.value)
    if name == "segresnet":  # cheap to build: compare with the adapter's own rule
        assert cfg.size_rule() == build_adapter(name, cfg.params).size_rule


def test_inference_defaults_and_limits() -> None:
    cfg = InferenceConfig()
    assert cfg.roi_size == (96, 96, 16)
    assert 0 <= cfg.overlap < 1

    for values, path in [
        ({"overlap": 1.0}, ("overlap",)),
        ({"overlap": -0.1}, ("overlap",)),
        ({"sw_batch_size": 0}, ("sw_batch_size",)),
        ({"roi_size": [96, 96]}, ("roi_size", 2)),
        ({"roi_size": [96, 0, 16]}, ("roi_size", 1)),
        ({"precision": "fp64"}, ("precision",)),
    ]:
        with pytest.raises(ValidationError) as err:
            InferenceConfig.model_validate(values)
        assert err.value.errors()[0]["loc"] == path, values
