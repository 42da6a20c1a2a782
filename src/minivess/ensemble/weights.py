"""Member weights of a weighted-mean ensemble: from validation scores, or fitted on voxels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from minivess.errors import ConfigError, DataError


def weights_from_scores(scores: Sequence[float], *, power: float = 1.0) -> list[float]:
    """Weights proportional to ``score ** power`` (e.g. validation Dice), summing to 1.

    Example:
        >>> weights_from_scores([0.6, 0.8, 0.6])
        [0.3, 0.4, 0.3]

    Raises:
        ConfigError: A negative or non-finite score, or all scores zero.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2 or not np.all(np.isfinite(values)) or values.min() < 0:
        raise ConfigError(f"need two or more finite non-negative scores, got {list(scores)}")
    raised = values**power
    if raised.sum() <= 0:
        raise ConfigError("all member scores are zero: no weighting can be derived")
    return [round(float(w), 12) for w in raised / raised.sum()]


def fit_weights(
    member_probs: Sequence[np.ndarray],
    label: np.ndarray,
    *,
    steps: int = 200,
    max_voxels: int = 200_000,
    seed: int = 0,
) -> list[float]:
    """Mixture weights that minimise the validation log-loss of the weighted mean P(vessel).

    Weights live on the simplex (a softmax of free parameters), so the result is a proper
    weighted mean; voxels are sub-sampled class-balanced to ``max_voxels``.

    Args:
        member_probs: Per member, P(vessel) on the same validation voxels (any equal shapes).
        label: Non-zero on vessel voxels, same shape.
        steps: Optimiser steps (L-BFGS).
        max_voxels: Voxels used at most.
        seed: Seed of the voxel sampling.

    Raises:
        DataError: Shapes differ, fewer than two members, or one class is absent.
    """
    if len(member_probs) < 2:
        raise DataError(None, "ensemble-shape", "fitting weights needs at least two members")
    p = np.stack([np.asarray(m, dtype=np.float64).ravel() for m in member_probs])
    y = (np.asarray(label) != 0).ravel()
    if p.shape[1] != y.size:
        raise DataError(None, "shape", "member probabilities and label differ in size")
    rng = np.random.default_rng(seed)
    picks = []
    for cls in (True, False):
        where = np.flatnonzero(y == cls)
        if where.size == 0:
            raise DataError(None, "calibration-set", "the validation voxels lack one class")
        picks.append(rng.choice(where, size=min(max_voxels // 2, where.size), replace=False))
    index = np.concatenate(picks)
    probs = torch.from_numpy(p[:, index]).clamp(1e-6, 1 - 1e-6)
    target = torch.from_numpy(y[index].astype(np.float64))
    logits = torch.zeros(len(member_probs), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([logits], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        mixed = (torch.softmax(logits, 0)[:, None] * probs).sum(0)
        loss = torch.nn.functional.binary_cross_entropy(mixed, target)
        loss.backward()
        return loss

    optimiser.step(closure)
    weights = torch.softmax(logits.detach(), 0).numpy()
    return [float(w) for w in weights]
