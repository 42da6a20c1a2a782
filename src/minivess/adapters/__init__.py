"""Model adapters: every network minivess can train, evaluate and serve, found by name.

Built-in adapters are declared as entry points of the ``minivess.adapters`` group in
``pyproject.toml``, exactly as a third-party package adds its own (see
``examples/minivess-unet2d``).

Example:
    >>> adapter = build_adapter("segresnet", {"init_filters": 8})
    >>> adapter.out_channels
    2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from minivess.adapters.base import AdapterConfig, ModelAdapter, SizeRule
from minivess.adapters.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from minivess.adapters.inference import (
    Blend,
    Precision,
    class_mask,
    resolve_precision,
    window_blending,
)
from minivess.registry import Registry

ADAPTERS: Registry[type[ModelAdapter]] = Registry("minivess.adapters", "model adapter")


def get_adapter(name: str) -> type[ModelAdapter]:
    """The adapter class registered as ``name``; a ConfigError listing valid names if none."""
    return ADAPTERS.get(name)


def build_adapter(name: str, params: Mapping[str, Any] | BaseModel | None = None) -> ModelAdapter:
    """Validate ``params`` for adapter ``name`` and build it (fresh random weights).

    Raises:
        ConfigError: Unknown adapter name (the message lists valid ones) or invalid params
            (the message names each field).
    """
    return get_adapter(name).from_config(params)


__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "Blend",
    "CheckpointError",
    "CheckpointInfo",
    "ModelAdapter",
    "Precision",
    "SizeRule",
    "build_adapter",
    "class_mask",
    "get_adapter",
    "load_checkpoint",
    "resolve_precision",
    "save_checkpoint",
    "window_blending",
]
