"""Behaviour every minivess metric shares: inputs, accumulation, reset, merging states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minivess.metrics import Dice
from minivess.metrics.per_volume import binary_volumes, spacing_per_volume


def test_channel_dim_and_integer_or_float_masks_are_accepted(make_blobs):
    preds, target = make_blobs(2, seed=1), make_blobs(2, seed=2)
    reference = Dice()
    reference.update(preds, target)
    variants = [
        (preds[:, None], target[:, None]),
        (preds.long(), target.int()),
        (preds.float(), target.to(torch.uint8)),
    ]
    for p, t in variants:
        metric = Dice()
        metric.update(p, t)
        torch.testing.assert_close(metric.per_volume(), reference.per_volume())


@pytest.mark.parametrize(
    ("preds", "target", "message"),
    [
        (torch.rand(1, 4, 4, 2), torch.ones(1, 4, 4, 2), "threshold probabilities"),
        (torch.full((1, 4, 4, 2), 255), torch.ones(1, 4, 4, 2), "only 0 and 1"),
        (torch.ones(1, 4, 4, 2), torch.ones(1, 4, 4, 3), "same shape"),
        (torch.ones(1, 2, 4, 4, 2), torch.ones(1, 2, 4, 4, 2), r"\(B, 1, H, W, D\)"),
        (torch.ones(4, 4, 2), torch.ones(4, 4, 2), r"\(B, H, W, D\)"),
    ],
)
def test_bad_masks_are_refused_with_a_reason(preds, target, message):
    with pytest.raises(ValueError, match=message):
        binary_volumes(preds, target)


def test_non_tensor_masks_are_refused():
    with pytest.raises(TypeError, match=r"preds must be a torch\.Tensor"):
        binary_volumes(np.ones((1, 2, 2, 2)), torch.ones(1, 2, 2, 2))  # type: ignore[arg-type]


def test_spacing_is_shared_or_given_per_volume():
    assert spacing_per_volume(None, 2) == [(1.0, 1.0, 1.0)] * 2
    assert spacing_per_volume((1, 1, 5), 2) == [(1.0, 1.0, 5.0)] * 2
    per_volume = torch.tensor([[1.0, 1.0, 5.0], [0.5, 0.5, 2.0]])
    assert spacing_per_volume(per_volume, 2) == [(1.0, 1.0, 5.0), (0.5, 0.5, 2.0)]


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ((1.0, 1.0), "three voxel sizes"),
        ((1.0, 0.0, 5.0), "positive"),
        ((1, float("nan"), 1), "finite"),
        ("abc", "numbers"),
    ],
)
def test_bad_spacing_is_refused(spacing, message):
    with pytest.raises(ValueError, match=message):
        spacing_per_volume(spacing, 2)


def test_batches_accumulate_to_the_mean_of_all_volumes(make_blobs):
    preds, target = make_blobs(5, seed=3), make_blobs(5, seed=4)
    whole = Dice()
    whole.update(preds, target)
    split = Dice()
    split.update(preds[:2], target[:2])
    split.update(preds[2:], target[2:])
    torch.testing.assert_close(split.per_volume(), whole.per_volume())
    torch.testing.assert_close(split.compute(), whole.per_volume().mean())
    assert split.per_volume().shape == (5,)


def test_forward_returns_the_batch_score_and_keeps_accumulating(make_blobs):
    preds, target = make_blobs(4, seed=5), make_blobs(4, seed=6)
    metric = Dice()
    first = metric(preds[:2], target[:2])
    metric(preds[2:], target[2:])
    values = metric.per_volume()
    torch.testing.assert_close(first, values[:2].mean())
    assert values.shape == (4,)


def test_reset_forgets_every_volume(make_blobs):
    metric = Dice()
    metric.update(make_blobs(2, seed=1), make_blobs(2, seed=2))
    metric.reset()
    assert metric.per_volume().numel() == 0
    metric.update(make_blobs(1, seed=1), make_blobs(1, seed=1))
    assert metric.per_volume().tolist() == [1.0]


def test_merge_state_keeps_the_volumes_of_both_metrics(make_blobs):
    preds, target = make_blobs(4, seed=7), make_blobs(4, seed=8)
    whole, left, right = Dice(), Dice(), Dice()
    whole.update(preds, target)
    left.update(preds[:3], target[:3])
    right.update(preds[3:], target[3:])
    left.merge_state(right)
    torch.testing.assert_close(left.per_volume().sort().values, whole.per_volume().sort().values)
    torch.testing.assert_close(left.compute(), whole.compute())


def test_compute_before_any_update_is_nan():
    metric = Dice()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    assert metric.per_volume().numel() == 0
