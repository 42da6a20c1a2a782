"""Optimizers and learning-rate schedules, built by the names the training config accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("warmup_cosine", "plateau", "none")


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with Nesterov momentum) over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=momentum > 0
        )
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_factor: float
) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_factor`` at ``total_steps``.

    Example:
        >>> warmup_cosine_factor(0, 10, 100, 0.0) < warmup_cosine_factor(9, 10, 100, 0.0) == 1.0
        True
        >>> round(warmup_cosine_factor(100, 10, 100, 0.05), 3)
        0.05
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    plateau_patience: int = 5,
    plateau_factor: float = 0.5,
) -> Any:
    """A scheduler stepped per optimizer step (``warmup_cosine``) or per validation (``plateau``).

    Returns ``None`` for ``"none"``.
    """
    if name == "none":
        return None
    if name == "warmup_cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        min_factor = min_lr / base_lr if base_lr > 0 else 0.0
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_factor),
        )
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", patience=plateau_patience, factor=plateau_factor, min_lr=min_lr
        )
    raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
