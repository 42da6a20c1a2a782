"""Flattened parameters and provenance tags: what a run records about its inputs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from minivess.errors import ConfigError
from minivess.tracking.provenance import (
    MAX_PARAM_CHARS,
    config_dict,
    flatten_params,
    provenance_tags,
)


class _Optimizer(BaseModel):
    name: str = "adamw"
    lr: float = 1e-3


class _Config(BaseModel):
    optimizer: _Optimizer = _Optimizer()
    patch_size: tuple[int, int, int] = (96, 96, 16)
    note: str | None = None


def test_nested_config_flattens_to_dotted_keys_with_json_values() -> None:
    params = flatten_params(config_dict(_Config()))
    assert params == {
        "optimizer.name": "adamw",
        "optimizer.lr": "0.001",
        "patch_size": "[96, 96, 16]",
        "note": "null",
    }


def test_long_values_are_cut_to_the_limit_with_an_ellipsis() -> None:
    params = flatten_params({"long": "x" * (MAX_PARAM_CHARS + 50), "short": "y" * MAX_PARAM_CHARS})
    assert len(params["long"]) == MAX_PARAM_CHARS
    assert params["long"].endswith("...")
    assert params["short"] == "y" * MAX_PARAM_CHARS


def test_empty_sections_are_kept_as_parameters() -> None:
    assert flatten_params({"augmentation": {}, "a": {"b": {}}}) == {
        "augmentation": "{}",
        "a.b": "{}",
    }


def test_config_must_be_plain_json() -> None:
    with pytest.raises(ConfigError, match="JSON"):
        config_dict({"model": object()})


def test_provenance_names_code_and_machine() -> None:
    import monai
    import torch

    import minivess

    tags = provenance_tags()
    assert tags["minivess_version"] == minivess.__version__
    assert tags["torch_version"] == torch.__version__
    assert tags["monai_version"] == monai.__version__
    assert tags["python_version"].count(".") == 2
    assert tags["host"]
    assert tags["cpu"]
    assert all(isinstance(value, str) and value for value in tags.values())
