"""Segmentation metrics for thin 3D vessels as TorchMetrics metrics, one score per volume.

Every metric takes binary masks ``(B, H, W, D)`` or ``(B, 1, H, W, D)`` and an optional voxel
size in micrometres, keeps one value per volume (gathered across DDP ranks), and offers
``compute()`` (mean over volumes, NaN volumes skipped) and ``per_volume()``.
"""

from minivess.metrics.cldice import ClDice, cldice, skeleton
from minivess.metrics.overlap import Dice, IoU, dice_per_volume, iou_per_volume
from minivess.metrics.per_volume import PerVolumeMetric, SingleScoreMetric
from minivess.metrics.surface import (
    HausdorffDistance95,
    MeanSurfaceDistance,
    NormalizedSurfaceDice,
    SurfaceDistances,
    surface_distances,
)
from minivess.metrics.vessel_metrics import VesselMetrics

__all__ = [
    "ClDice",
    "Dice",
    "HausdorffDistance95",
    "IoU",
    "MeanSurfaceDistance",
    "NormalizedSurfaceDice",
    "PerVolumeMetric",
    "SingleScoreMetric",
    "SurfaceDistances",
    "VesselMetrics",
    "cldice",
    "dice_per_volume",
    "iou_per_volume",
    "skeleton",
    "surface_distances",
]
