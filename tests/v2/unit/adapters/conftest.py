"""Tiny adapters shared by the adapter tests (seeded, fast on two CPU cores)."""

from __future__ import annotations

import pytest
import torch

from minivess.adapters import ModelAdapter, build_adapter

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


@pytest.fixture
def tiny_segresnet() -> ModelAdapter:
    """A SegResNet with two halvings (inputs multiples of 4) and random seeded weights."""
    torch.manual_seed(0)
    return build_adapter("segresnet", TINY_SEGRESNET)


@pytest.fixture
def odd_image() -> torch.Tensor:
    """A normalised single-channel volume whose sides fit no size rule: (1, 37, 41, 11)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 37, 41, 11, generator=generator)
