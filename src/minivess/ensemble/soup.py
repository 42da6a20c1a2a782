"""Model soups (Wortsman et al. 2022): one network whose weights average several checkpoints.

A soup predicts at the cost of one model, but only works for checkpoints of the same
architecture fine-tuned from a shared initialisation (different seeds of training from the
same pre-trained weights, or the same run's checkpoints); averaging unrelated networks gives
noise. The *greedy* soup therefore tries ingredients best first and keeps one only if the
held-out score of the soup does not drop, so it is never worse than its best ingredient on the
data that picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minivess.adapters import CheckpointInfo, ModelAdapter, build_adapter
from minivess.errors import ConfigError

Score = Callable[[ModelAdapter], float]
"""Held-out score of a model, higher is better (e.g. mean validation Dice)."""


def average_weights(adapters: Sequence[ModelAdapter]) -> ModelAdapter:
    """A new adapter whose floating-point weights are the mean of ``adapters``' (uniform soup).

    Integer buffers (e.g. counters) are taken from the first adapter.

    Raises:
        ConfigError: No adapter, or adapters of different name or config.
    """
    if not adapters:
        raise ConfigError("a soup needs at least one model")
    first = adapters[0]
    for other in adapters[1:]:
        if other.name != first.name or other.config != first.config:
            raise ConfigError(
                "a soup averages weights of one architecture: "
                f"{first.name} {first.config!r} differs from {other.name} {other.config!r}"
            )
    states = [a.network.state_dict() for a in adapters]
    averaged = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            averaged[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        else:
            averaged[key] = value.clone()
    soup = build_adapter(first.name, first.config)
    soup.network.load_state_dict(averaged)
    return soup


@dataclass(frozen=True)
class SoupResult:
    """Outcome of :func:`greedy_soup`.

    Args:
        soup: The averaged model.
        ingredients: Indices (into the input order) of the models kept.
        scores: Held-out score of each input model alone.
        soup_score: Held-out score of the soup.
    """

    soup: ModelAdapter
    ingredients: tuple[int, ...]
    scores: tuple[float, ...]
    soup_score: float


def greedy_soup(members: Sequence[tuple[ModelAdapter, CheckpointInfo]], score: Score) -> SoupResult:
    """Greedy soup: add models best-first while the held-out score does not decrease.

    Args:
        members: Loaded ``(adapter, info)`` pairs of one architecture.
        score: Held-out score of a model (evaluated ``len(members) * 2 - 1`` times at most).

    Raises:
        ConfigError: Fewer than two models, or different architectures.
    """
    if len(members) < 2:
        raise ConfigError(f"a greedy soup needs at least two models, got {len(members)}")
    adapters = [a for a, _ in members]
    average_weights(adapters[:1] + adapters[1:2])  # fail early on mixed architectures
    scores = [float(score(a)) for a in adapters]
    order = sorted(range(len(adapters)), key=lambda i: scores[i], reverse=True)
    kept = [order[0]]
    best_soup, best = adapters[order[0]], scores[order[0]]
    for index in order[1:]:
        candidate = average_weights([adapters[i] for i in [*kept, index]])
        value = float(score(candidate))
        if value >= best:
            kept.append(index)
            best_soup, best = candidate, value
    if len(kept) == 1:  # a copy, so saving the soup never aliases a member's weights
        best_soup = average_weights([best_soup])
    return SoupResult(best_soup, tuple(kept), tuple(scores), best)
