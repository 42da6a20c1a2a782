from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from minivess.config.data import AugmentationConfig, DataConfig


def _cfg(**overrides: Any) -> DataConfig:
    return DataConfig(dataset_dir="data/prepared", splits_file="data/splits.json", **overrides)


def _error_paths(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.value.errors()]


def test_defaults_are_valid_and_sensible() -> None:
    cfg = _cfg()
    assert cfg.dataset_dir == Path("data/prepared")
    assert cfg.fold == 0
    assert cfg.patch_size == (96, 96, 16)
    assert cfg.intensity_percentiles == (1.0, 99.8)
    assert cfg.cache == "memory"
    assert cfg.augmentation.enabled


def test_round_trips_through_plain_data() -> None:
    cfg = _cfg(
        patch_size=(64, 64, 8), cache="disk", cache_dir="cache", augmentation={"flip": {"p": 0.1}}
    )
    assert DataConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"intensity_percentiles": (99.8, 1.0)}, "intensity_percentiles"),
        ({"intensity_percentiles": (5.0, 5.0)}, "intensity_percentiles"),
        ({"intensity_percentiles": (1.0, 101.0)}, "intensity_percentiles.1"),
        ({"patch_size": (96, 96)}, "patch_size.2"),
        ({"patch_size": (96, 0, 16)}, "patch_size.1"),
        ({"pos_neg_ratio": (0.0, 0.0)}, "pos_neg_ratio"),
        ({"pos_neg_ratio": (-1.0, 1.0)}, "pos_neg_ratio.0"),
        ({"samples_per_volume": 0}, "samples_per_volume"),
        ({"fold": -1}, "fold"),
        ({"num_workers": -1}, "num_workers"),
        ({"cache": "gpu"}, "cache"),
        ({"patchsize": (96, 96, 16)}, "patchsize"),
        ({"augmentation": {"noise": {"std": (0.2, 0.1)}}}, "augmentation.noise.std"),
        ({"augmentation": {"flip": {"axes": (0, 0)}}}, "augmentation.flip.axes"),
        ({"augmentation": {"flip": {"axes": (3,)}}}, "augmentation.flip.axes.0"),
        ({"augmentation": {"affine": {"p": 1.5}}}, "augmentation.affine.p"),
        (
            {"augmentation": {"elastic": {"num_control_points": 3}}},
            "augmentation.elastic.num_control_points",
        ),
        (
            {"augmentation": {"anisotropy": {"downsampling": (0.5, 2.0)}}},
            "augmentation.anisotropy.downsampling.0",
        ),
        ({"augmentation": {"gamma": {"log_gamma": (0.3, -0.3)}}}, "augmentation.gamma.log_gamma"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _cfg(**overrides)
    assert field in _error_paths(exc)


def test_reversed_percentiles_message_says_which_is_which() -> None:
    with pytest.raises(ValidationError, match=r"lower \(99\.0\) must be below upper \(1\.0\)"):
        _cfg(intensity_percentiles=(99.0, 1.0))


def test_disk_cache_requires_a_cache_dir() -> None:
    with pytest.raises(ValidationError, match="cache_dir: required when cache='disk'"):
        _cfg(cache="disk")
    assert _cfg(cache="disk", cache_dir="cache").cache_dir == Path("cache")
    assert _cfg(cache="none").cache_dir is None


def test_one_sided_sampling_is_allowed() -> None:
    assert _cfg(pos_neg_ratio=(1.0, 0.0)).pos_neg_ratio == (1.0, 0.0)


def test_config_is_immutable() -> None:
    cfg = _cfg()
    with pytest.raises(ValidationError):
        cfg.fold = 2  # type: ignore[misc]


def _undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        if not field.description:
            missing.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += _undocumented(annotation, f"{prefix}{name}.")
    return missing


def test_every_field_carries_its_documentation() -> None:
    """Field docs feed ``--help`` and the JSON schema, so none may be missing."""
    assert _undocumented(DataConfig) == []
    schema = DataConfig.model_json_schema()
    assert "percentiles" in schema["properties"]["intensity_percentiles"]["description"]


def test_augmentation_can_be_switched_off_whole() -> None:
    assert not AugmentationConfig(enabled=False).enabled
