"""clDice against the definition of Shit et al. (2021) on scikit-image skeletons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from minivess.metrics import ClDice, cldice, skeleton


def _cldice_by_definition(pred, target, skel=skeletonize) -> float:
    skel_pred, skel_target = skel(pred), skel(target)
    tprec = (skel_pred & target).sum() / skel_pred.sum()
    tsens = (skel_target & pred).sum() / skel_target.sum()
    return float(2 * tprec * tsens / (tprec + tsens))


def _erased_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Component labels of ``mask`` and the labels scikit-image's skeleton does not touch."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
    return labels, np.setdiff1d(np.arange(1, n + 1), labels[skeletonize(mask)])


def test_matches_the_definition_on_real_masks(real_pairs):
    preds, target, _ = real_pairs
    metric = ClDice()
    metric.update(preds, target)
    expected = []
    for p, t in zip(preds.numpy(), target.numpy(), strict=True):
        # Here scikit-image's skeletons are used as they are: no component is erased.
        assert _erased_components(p)[1].size == 0
        assert _erased_components(t)[1].size == 0
        expected.append(_cldice_by_definition(p, t))
    torch.testing.assert_close(metric.per_volume(), torch.tensor(expected))
    torch.testing.assert_close(metric.compute(), torch.tensor(expected).mean())


def test_matches_the_definition_on_random_masks(make_blobs):
    preds, target = make_blobs(3, (32, 32, 10), seed=1), make_blobs(3, (32, 32, 10), seed=2)
    metric = ClDice()
    metric.update(preds, target)
    expected = [
        _cldice_by_definition(p, t, skel=skeleton)
        for p, t in zip(preds.numpy(), target.numpy(), strict=True)
    ]
    torch.testing.assert_close(metric.per_volume(), torch.tensor(expected))


def test_skeleton_is_scikit_image_s_plus_one_voxel_per_erased_component(make_blobs):
    for mask in make_blobs(4, (32, 32, 10), seed=3).numpy():
        labels, erased = _erased_components(mask)
        assert erased.size > 0, "these blobs should include components thinning erases"
        skel, reference = skeleton(mask), skeletonize(mask)
        assert np.array_equal(skel & ~np.isin(labels, erased), reference)
        added = labels[skel & ~reference]
        assert sorted(added.tolist()) == erased.tolist()


def test_a_missed_branch_costs_topological_sensitivity():
    tube = np.zeros((5, 5, 9), dtype=bool)
    tube[2, 2, 1:8] = True
    two_tubes = tube.copy()
    two_tubes[0, 0, 1:8] = True
    # Tprec = 1 (the predicted centreline lies in the reference), Tsens = 1/2.
    assert cldice(tube, two_tubes) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert cldice(two_tubes, tube) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert cldice(tube, tube) == 1.0


def test_tubes_that_thinning_erases_keep_one_interior_voxel():
    tube = np.zeros((8, 8, 12), dtype=bool)
    tube[2:4, 2:4, 1:11] = True  # scikit-image thins an even-thickness tube to nothing
    assert not skeletonize(tube).any()
    skel = skeleton(tube)
    assert skel.sum() == 1
    assert not (skel & ~tube).any()
    assert cldice(tube, tube) == 1.0
    assert cldice(tube, np.roll(tube, 4, axis=0)) == 0.0


def test_empty_mask_policy():
    empty = torch.zeros(1, 6, 6, 6, dtype=torch.bool)
    vessel = empty.clone()
    vessel[0, 3, 3, 1:5] = True
    metric = ClDice()
    metric.update(empty, empty)
    metric.update(vessel, empty)
    metric.update(empty, vessel)
    assert metric.per_volume().tolist() == [1.0, 0.0, 0.0]
    assert metric.nan_count() == 0
