"""Model soups: weight averaging, the greedy rule, one architecture only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minivess.adapters import build_adapter, load_checkpoint
from minivess.ensemble.soup import average_weights, greedy_soup
from minivess.errors import ConfigError

from .conftest import TINY_SEGRESNET


def test_average_of_two_models_is_the_midpoint(member_checkpoints: list[Path]) -> None:
    a, b = (load_checkpoint(p)[0] for p in member_checkpoints)
    soup = average_weights([a, b])
    key = next(k for k, v in soup.network.state_dict().items() if v.is_floating_point())
    expected = (a.network.state_dict()[key] + b.network.state_dict()[key]) / 2
    assert torch.allclose(soup.network.state_dict()[key], expected)


def test_different_architectures_cannot_be_averaged() -> None:
    small = build_adapter("segresnet", TINY_SEGRESNET)
    other = build_adapter("segresnet", {**TINY_SEGRESNET, "init_filters": 8})
    with pytest.raises(ConfigError, match="one architecture"):
        average_weights([small, other])


def test_greedy_soup_keeps_only_ingredients_that_help(member_checkpoints: list[Path]) -> None:
    members = [load_checkpoint(p) for p in member_checkpoints]
    first = members[0][0]
    reference = {k: v.clone() for k, v in first.network.state_dict().items()}

    def closeness_to_first(adapter: object) -> float:  # a score only the first model maximises
        state = adapter.network.state_dict()  # type: ignore[attr-defined]
        return -sum(float((state[k].float() - v.float()).abs().sum()) for k, v in reference.items())

    result = greedy_soup(members, closeness_to_first)
    assert result.ingredients == (0,)
    assert result.soup_score == pytest.approx(0.0)
    assert result.soup is not first  # a copy, never an alias of a member

    result = greedy_soup(members, lambda adapter: 1.0)  # ties: averaging does not hurt
    assert result.ingredients == (0, 1)
