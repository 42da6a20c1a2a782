"""Segmentation losses by name. Logits are (B, 2, H, W, D); labels (B, 1, H, W, D) in {0, 1}."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from torch import nn


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft morphological erosion: a min-pool over the 6-neighbourhood (one axis at a time)."""
    p1 = -F.max_pool3d(-x, (3, 1, 1), (1, 1, 1), (1, 0, 0))
    p2 = -F.max_pool3d(-x, (1, 3, 1), (1, 1, 1), (0, 1, 0))
    p3 = -F.max_pool3d(-x, (1, 1, 3), (1, 1, 1), (0, 0, 1))
    return torch.min(torch.min(p1, p2), p3)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft morphological dilation: a 3x3x3 max-pool."""
    return F.max_pool3d(x, (3, 3, 3), (1, 1, 1), (1, 1, 1))


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Differentiable skeleton of a probability map (Shit et al., CVPR 2021, Algorithm 1).

    Args:
        x: Probabilities (B, C, H, W, D) in [0, 1].
        iterations: Erosion steps; should exceed the largest vessel radius in voxels.
    """
    opened = soft_dilate(soft_erode(x))
    skeleton = F.relu(x - opened)
    for _ in range(iterations):
        x = soft_erode(x)
        opened = soft_dilate(soft_erode(x))
        delta = F.relu(x - opened)
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


class SoftClDiceLoss(nn.Module):
    """A Dice-CE loss blended with the topology-aware soft-clDice loss for thin vessels.

    ``loss = (1 - alpha) * DiceCE + alpha * (1 - soft_clDice)``, where soft-clDice compares the
    soft skeletons of the predicted and true vessel masks (Shit et al. 2021).

    Args:
        alpha: Weight of the clDice term in [0, 1].
        iterations: Soft-skeleton iterations.
        smooth: Smoothing constant of the clDice ratios.
    """

    def __init__(self, alpha: float = 0.5, iterations: int = 3, smooth: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.iterations = iterations
        self.smooth = smooth
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Blend of Dice-CE and 1 - soft-clDice on the vessel channel."""
        vessel = torch.softmax(logits, dim=1)[:, 1:2]
        truth = (target > 0).to(vessel.dtype)
        skel_pred = soft_skeleton(vessel, self.iterations)
        skel_true = soft_skeleton(truth, self.iterations)
        tprec = ((skel_pred * truth).sum() + self.smooth) / (skel_pred.sum() + self.smooth)
        tsens = ((skel_true * vessel).sum() + self.smooth) / (skel_true.sum() + self.smooth)
        cldice = 2.0 * tprec * tsens / (tprec + tsens)
        return (1.0 - self.alpha) * self.dice_ce(logits, target) + self.alpha * (1.0 - cldice)


def _dice() -> nn.Module:
    return DiceLoss(to_onehot_y=True, softmax=True)


def _dice_ce() -> nn.Module:
    return DiceCELoss(to_onehot_y=True, softmax=True)


def _focal() -> nn.Module:
    return FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)


LOSS_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dice": _dice,
    "dice_ce": _dice_ce,
    "focal": _focal,
    "cldice": SoftClDiceLoss,
}
"""Loss name -> builder; the names are exactly those ``LossConfig.name`` accepts."""
