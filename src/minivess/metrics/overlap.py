"""Voxel overlap metrics: Dice and IoU (Jaccard) of binary vessel masks, one value per volume.

Both are computed with tensor reductions on the input's device (CPU or GPU).
Empty-mask policy: both masks empty -> 1 (nothing to find, nothing found); exactly one empty
-> 0. These scores are therefore never NaN.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from minivess.metrics.per_volume import SingleScoreMetric, Spacing


def _counts(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """|P ∩ G|, |P| and |G| of each volume of a (B, H, W, D) bool batch."""
    dims = tuple(range(1, preds.ndim))
    return (preds & target).sum(dims), preds.sum(dims), target.sum(dims)


def dice_per_volume(preds: Tensor, target: Tensor) -> Tensor:
    """Dice 2|P ∩ G| / (|P| + |G|) of each volume; 1 where both masks are empty.

    Args:
        preds: Predicted masks, bool, (B, H, W, D).
        target: Reference masks, bool, same shape.

    Returns:
        A float32 tensor of shape (B,).

    Example:
        >>> p = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool).reshape(1, 2, 2, 1)
        >>> g = torch.tensor([[1, 0, 0, 0]], dtype=torch.bool).reshape(1, 2, 2, 1)
        >>> dice_per_volume(p, g)
        tensor([0.6667])
    """
    inter, n_pred, n_target = _counts(preds, target)
    total = n_pred + n_target
    dice = 2 * inter / total.clamp(min=1)
    return torch.where(total == 0, 1.0, dice).float()


def iou_per_volume(preds: Tensor, target: Tensor) -> Tensor:
    """IoU |P ∩ G| / |P ∪ G| of each volume; 1 where both masks are empty.

    Args:
        preds: Predicted masks, bool, (B, H, W, D).
        target: Reference masks, bool, same shape.

    Returns:
        A float32 tensor of shape (B,).
    """
    inter, n_pred, n_target = _counts(preds, target)
    union = n_pred + n_target - inter
    iou = inter / union.clamp(min=1)
    return torch.where(union == 0, 1.0, iou).float()


class Dice(SingleScoreMetric):
    """Mean per-volume Dice coefficient of binary masks.

    Each volume is scored on its own and ``compute()`` averages the volume scores (it is not
    the Dice of all voxels pooled). Both masks empty -> 1; exactly one empty -> 0.
    ``spacing`` is accepted by ``update`` for a uniform API and ignored.

    Example:
        >>> metric = Dice()
        >>> pred = torch.zeros(2, 4, 4, 3, dtype=torch.bool)
        >>> pred[0, :2] = True
        >>> target = pred.clone()
        >>> target[0, 0] = False
        >>> metric.update(pred, target)
        >>> metric.per_volume()
        tensor([0.6667, 1.0000])
        >>> metric.compute()
        tensor(0.8333)
    """

    higher_is_better = True
    score_names: ClassVar[tuple[str, ...]] = ("dice",)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        return {"dice": dice_per_volume(preds, target)}


class IoU(SingleScoreMetric):
    """Mean per-volume intersection over union (Jaccard index) of binary masks.

    Both masks empty -> 1; exactly one empty -> 0. ``spacing`` is accepted and ignored.
    """

    higher_is_better = True
    score_names: ClassVar[tuple[str, ...]] = ("iou",)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        return {"iou": iou_per_volume(preds, target)}
