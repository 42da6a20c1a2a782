"""NSD, HD95 and MASD in micrometres against MONAI, with anisotropic voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric, compute_surface_dice

from minivess.metrics import HausdorffDistance95, MeanSurfaceDistance, NormalizedSurfaceDice

ANISOTROPIC = (1.0, 1.0, 5.0)

# MONAI's own surface metrics pass an argument it has deprecated to its own helper.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _scores(metric, preds, target, spacing=None) -> torch.Tensor:
    metric.update(preds, target, spacing=spacing)
    return metric.per_volume()


def _monai_nsd(preds, target, spacing, tolerance) -> torch.Tensor:
    return compute_surface_dice(
        preds[:, None].float(),
        target[:, None].float(),
        class_thresholds=[tolerance],
        include_background=True,
        spacing=spacing,
    )[:, 0]


def _monai_hd95(preds, target, spacing) -> torch.Tensor:
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    return torch.as_tensor(
        metric(preds[:, None].float(), target[:, None].float(), spacing=spacing)
    )[:, 0]


def _monai_masd(preds, target, spacing) -> torch.Tensor:
    metric = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")
    return torch.as_tensor(
        metric(preds[:, None].float(), target[:, None].float(), spacing=spacing)
    )[:, 0]


def _check_against_monai(preds, target, spacing) -> None:
    for tolerance in (1.0, 2.0, 5.0):
        ours = _scores(NormalizedSurfaceDice(tolerance_um=tolerance), preds, target, spacing)
        torch.testing.assert_close(ours, _monai_nsd(preds, target, spacing, tolerance))
    hd95 = _scores(HausdorffDistance95(), preds, target, spacing)
    torch.testing.assert_close(hd95, _monai_hd95(preds, target, spacing))
    masd = _scores(MeanSurfaceDistance(), preds, target, spacing)
    torch.testing.assert_close(masd, _monai_masd(preds, target, spacing))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISOTROPIC, (0.621, 0.5, 3.0)])
def test_matches_monai_on_random_masks(make_blobs, spacing):
    _check_against_monai(make_blobs(3, seed=1), make_blobs(3, seed=2), spacing)


def test_matches_monai_on_real_masks(real_pairs):
    preds, target, spacing = real_pairs
    _check_against_monai(preds, target, spacing)


def _two_voxels(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
    preds = torch.zeros(1, 8, 8, 6, dtype=torch.bool)
    target = torch.zeros_like(preds)
    preds[(0, *a)] = True
    target[(0, *b)] = True
    return preds, target


@pytest.mark.parametrize(
    ("pred_voxel", "target_voxel", "distance_um"),
    [
        ((4, 4, 1), (4, 4, 3), 10.0),  # two slices apart along D: 2 x 5 um
        ((2, 4, 1), (4, 4, 1), 2.0),  # two voxels apart along H: 2 x 1 um
        ((2, 4, 1), (4, 4, 2), math.sqrt(29)),
    ],
)
def test_distances_respect_anisotropic_voxels(pred_voxel, target_voxel, distance_um):
    preds, target = _two_voxels(pred_voxel, target_voxel)
    assert _scores(HausdorffDistance95(), preds, target, ANISOTROPIC).item() == pytest.approx(
        distance_um
    )
    assert _scores(MeanSurfaceDistance(), preds, target, ANISOTROPIC).item() == pytest.approx(
        distance_um
    )
    just_short = NormalizedSurfaceDice(tolerance_um=distance_um * 0.99)
    at_tolerance = NormalizedSurfaceDice(tolerance_um=distance_um * 1.0001)
    assert _scores(just_short, preds, target, ANISOTROPIC).item() == 0.0
    assert _scores(at_tolerance, preds, target, ANISOTROPIC).item() == 1.0


def test_masd_pools_the_surface_voxels_of_both_masks():
    # Prediction: one voxel; reference: that voxel and one 3 um away. Distances: pred -> ref
    # [0]; ref -> pred [0, 3]; pooled mean 1 (the mean of the directed means would be 0.75).
    preds = torch.zeros(1, 8, 8, 3, dtype=torch.bool)
    preds[0, 2, 2, 1] = True
    target = preds.clone()
    target[0, 5, 2, 1] = True
    assert _scores(MeanSurfaceDistance(), preds, target).item() == pytest.approx(1.0)


def test_spacing_can_differ_between_volumes_of_a_batch():
    preds, target = _two_voxels((4, 4, 1), (4, 4, 3))
    batch_p, batch_t = preds.expand(2, -1, -1, -1), target.expand(2, -1, -1, -1)
    spacing = [(1.0, 1.0, 5.0), (1.0, 1.0, 2.0)]
    assert _scores(HausdorffDistance95(), batch_p, batch_t, spacing).tolist() == [10.0, 4.0]


def test_empty_mask_policy():
    empty = torch.zeros(1, 6, 6, 4, dtype=torch.bool)
    vessel = empty.clone()
    vessel[0, 2:4, 2:4, :] = True
    expected = {
        NormalizedSurfaceDice: [1.0, 0.0, 0.0],
        HausdorffDistance95: [0.0, math.nan, math.nan],
        MeanSurfaceDistance: [0.0, math.nan, math.nan],
    }
    for metric_cls, values in expected.items():
        metric = metric_cls()
        for p, t in [(empty, empty), (vessel, empty), (empty, vessel)]:
            metric.update(p, t, spacing=ANISOTROPIC)
        np.testing.assert_array_equal(metric.per_volume().numpy(), values)
        assert metric.nan_count() == sum(math.isnan(v) for v in values)
        # The mean skips undefined volumes.
        assert metric.compute().item() == pytest.approx(np.nanmean(values))


def test_undefined_everywhere_gives_a_nan_mean():
    metric = HausdorffDistance95()
    metric.update(torch.ones(2, 4, 4, 2), torch.zeros(2, 4, 4, 2))
    assert torch.isnan(metric.compute())
    assert metric.nan_count() == 2


@pytest.mark.parametrize("tolerance", [-1.0, math.inf, math.nan])
def test_nsd_refuses_a_meaningless_tolerance(tolerance):
    with pytest.raises(ValueError, match="tolerance_um"):
        NormalizedSurfaceDice(tolerance_um=tolerance)
