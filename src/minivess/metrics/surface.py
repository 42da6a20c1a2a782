"""Surface metrics in micrometres: normalised surface Dice, HD95 and mean surface distance.

The surface of a mask is its voxels with a face neighbour outside the mask (6-connectivity;
outside the volume counts as background, so a vessel cut by the volume edge has surface
there). This is MONAI's boundary definition, and, like MONAI's default, every surface voxel
has the same weight whatever its area. Distances are exact Euclidean distances between voxel
centres scaled by the anisotropic voxel size (VesselNN voxels are about 1 x 1 x 5 um), found
with a k-d tree on the CPU (NumPy / SciPy) whatever the input device.

Empty-mask policy (both / exactly one mask empty): NSD 1 / 0; HD95 and MASD 0 / NaN. A NaN
volume is left out of ``compute()``'s mean and counted by ``nan_count()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.spatial import KDTree
from torch import Tensor

from minivess.metrics.per_volume import SingleScoreMetric, Spacing, as_numpy

_FACE_NEIGHBOURS = ndi.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances (um) from each surface voxel of one mask to the other mask's surface.

    Attributes:
        pred_to_target: One distance per surface voxel of the prediction.
        target_to_pred: One distance per surface voxel of the reference.
        pred_empty: The prediction has no foreground (both arrays are then empty).
        target_empty: The reference has no foreground (both arrays are then empty).
    """

    pred_to_target: np.ndarray
    target_to_pred: np.ndarray
    pred_empty: bool
    target_empty: bool


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of a boolean 3D mask with a face neighbour outside it (volume edge included)."""
    return mask & ~ndi.binary_erosion(mask, structure=_FACE_NEIGHBOURS, border_value=0)


def _union_box(pred: np.ndarray, target: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the union, grown by one voxel so erosion sees the same neighbours."""
    box = ndi.find_objects((pred | target).astype(np.uint8))[0]
    return tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, pred.shape, strict=True)
    )


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> SurfaceDistances:
    """Surface-to-surface distances of one pair of boolean (H, W, D) masks.

    Args:
        pred: Predicted mask.
        target: Reference mask of the same shape.
        spacing: Voxel size in micrometres along (H, W, D).

    Returns:
        The distances in both directions, or empty arrays when a mask is empty.
    """
    pred_empty, target_empty = not pred.any(), not target.any()
    if pred_empty or target_empty:
        return SurfaceDistances(np.empty(0), np.empty(0), pred_empty, target_empty)
    box = _union_box(pred, target)
    scale = np.asarray(spacing, dtype=np.float64)
    pred_points = np.argwhere(surface_voxels(pred[box])) * scale
    target_points = np.argwhere(surface_voxels(target[box])) * scale
    return SurfaceDistances(
        pred_to_target=KDTree(target_points).query(pred_points, k=1)[0],
        target_to_pred=KDTree(pred_points).query(target_points, k=1)[0],
        pred_empty=False,
        target_empty=False,
    )


def normalized_surface_dice(distances: SurfaceDistances, tolerance_um: float) -> float:
    """Share of both surfaces lying within ``tolerance_um`` of the other surface (Nikolov 2021).

    Both masks empty -> 1; exactly one empty -> 0.
    """
    if distances.pred_empty or distances.target_empty:
        return float(distances.pred_empty and distances.target_empty)
    within = np.count_nonzero(distances.pred_to_target <= tolerance_um) + np.count_nonzero(
        distances.target_to_pred <= tolerance_um
    )
    return within / (distances.pred_to_target.size + distances.target_to_pred.size)


def hausdorff_distance_95(distances: SurfaceDistances) -> float:
    """Larger of the two directed 95th percentiles (linear interpolation) of surface distances.

    Both masks empty -> 0; exactly one empty -> NaN.
    """
    if distances.pred_empty or distances.target_empty:
        return 0.0 if distances.pred_empty and distances.target_empty else math.nan
    directed = (np.percentile(d, 95) for d in (distances.pred_to_target, distances.target_to_pred))
    return float(max(directed))


def mean_surface_distance(distances: SurfaceDistances) -> float:
    """Mean distance over the surface voxels of both masks to the other mask's surface.

    This pools both directions (MONAI's symmetric average surface distance), so the larger
    surface weighs more than in the mean of the two directed means. Both masks empty -> 0;
    exactly one empty -> NaN.
    """
    if distances.pred_empty or distances.target_empty:
        return 0.0 if distances.pred_empty and distances.target_empty else math.nan
    pooled = np.concatenate([distances.pred_to_target, distances.target_to_pred])
    return float(pooled.mean())


def check_tolerance(tolerance_um: float) -> float:
    """``tolerance_um`` as a float, or a ValueError unless it is finite and non-negative."""
    if not (math.isfinite(tolerance_um) and tolerance_um >= 0):
        raise ValueError(f"tolerance_um must be a finite distance >= 0 um, got {tolerance_um}")
    return float(tolerance_um)


def _surface_distances_per_volume(
    preds: Tensor, target: Tensor, spacings: list[Spacing]
) -> list[SurfaceDistances]:
    return [
        surface_distances(p, t, s)
        for p, t, s in zip(as_numpy(preds), as_numpy(target), spacings, strict=True)
    ]


class NormalizedSurfaceDice(SingleScoreMetric):
    """Mean per-volume normalised surface Dice (NSD) at a tolerance in micrometres.

    Args:
        tolerance_um: Surface voxels closer than or at this distance (um) to the other
            surface count as correct. Default 2 um.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: ``tolerance_um`` is negative or not finite.
    """

    higher_is_better = True
    score_names: ClassVar[tuple[str, ...]] = ("nsd",)

    def __init__(self, tolerance_um: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tolerance_um = check_tolerance(tolerance_um)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        scores = [
            normalized_surface_dice(d, self.tolerance_um)
            for d in _surface_distances_per_volume(preds, target, spacings)
        ]
        return {"nsd": torch.tensor(scores, dtype=torch.float64)}


class HausdorffDistance95(SingleScoreMetric):
    """Mean per-volume 95th-percentile Hausdorff distance in micrometres (lower is better).

    Per volume: the larger of the 95th percentiles of the prediction-to-reference and
    reference-to-prediction surface distances. Both masks empty -> 0; exactly one empty -> NaN,
    left out of ``compute()`` and counted by ``nan_count()``.
    """

    higher_is_better = False
    score_names: ClassVar[tuple[str, ...]] = ("hd95",)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        scores = [
            hausdorff_distance_95(d) for d in _surface_distances_per_volume(preds, target, spacings)
        ]
        return {"hd95": torch.tensor(scores, dtype=torch.float64)}


class MeanSurfaceDistance(SingleScoreMetric):
    """Mean per-volume symmetric mean surface distance (MASD) in micrometres.

    Per volume: the mean, over the surface voxels of both masks, of the distance to the other
    mask's surface (see :func:`mean_surface_distance`). Both masks empty -> 0; exactly one
    empty -> NaN, left out of ``compute()`` and counted by ``nan_count()``.
    """

    higher_is_better = False
    score_names: ClassVar[tuple[str, ...]] = ("masd",)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        scores = [
            mean_surface_distance(d) for d in _surface_distances_per_volume(preds, target, spacings)
        ]
        return {"masd": torch.tensor(scores, dtype=torch.float64)}
