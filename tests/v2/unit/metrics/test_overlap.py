"""Dice and IoU against MONAI on random and real masks, plus the empty-mask policy."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from minivess.metrics import Dice, IoU


def _monai(metric_cls: type, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    metric = metric_cls(include_background=True, reduction="none")
    return metric(preds[:, None].float(), target[:, None].float())[:, 0]


@pytest.mark.parametrize(("ours", "monai_cls"), [(Dice, DiceMetric), (IoU, MeanIoU)])
def test_matches_monai_on_random_masks(ours, monai_cls, make_blobs):
    preds, target = make_blobs(4, seed=1), make_blobs(4, seed=2)
    metric = ours()
    metric.update(preds, target)
    expected = _monai(monai_cls, preds, target)
    torch.testing.assert_close(metric.per_volume(), expected)
    torch.testing.assert_close(metric.compute(), expected.mean())


@pytest.mark.parametrize(("ours", "monai_cls"), [(Dice, DiceMetric), (IoU, MeanIoU)])
def test_matches_monai_on_real_masks(ours, monai_cls, real_pairs):
    preds, target, spacing = real_pairs
    metric = ours()
    metric.update(preds, target, spacing=spacing)
    values = metric.per_volume()
    torch.testing.assert_close(values, _monai(monai_cls, preds, target))
    assert torch.all((values > 0) & (values < 1)), "pairs should overlap only in part"


def test_dice_and_iou_follow_their_formulas():
    target = torch.zeros(1, 4, 4, 2, dtype=torch.bool)
    target[0, :2] = True  # 16 voxels
    preds = torch.zeros_like(target)
    preds[0, 1:3] = True  # 16 voxels, 8 shared
    dice, iou = Dice(), IoU()
    dice.update(preds, target)
    iou.update(preds, target)
    assert dice.compute().item() == pytest.approx(2 * 8 / 32)
    assert iou.compute().item() == pytest.approx(8 / 24)


@pytest.mark.parametrize("metric_cls", [Dice, IoU])
def test_empty_mask_policy(metric_cls):
    empty = torch.zeros(3, 4, 4, 2, dtype=torch.bool)
    full = torch.ones_like(empty)
    metric = metric_cls()
    metric.update(empty[:1], empty[:1])  # both empty: 1
    metric.update(full[:1], empty[:1])  # empty reference: 0
    metric.update(empty[:1], full[:1])  # empty prediction: 0
    assert metric.per_volume().tolist() == [1.0, 0.0, 0.0]
    assert metric.nan_count() == 0
    assert metric.compute().item() == pytest.approx(1 / 3)
