"""All vessel segmentation metrics in one pass: each skeleton and surface is computed once."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from minivess.metrics.cldice import cldice
from minivess.metrics.overlap import dice_per_volume, iou_per_volume
from minivess.metrics.per_volume import PerVolumeMetric, Spacing, as_numpy
from minivess.metrics.surface import (
    check_tolerance,
    hausdorff_distance_95,
    mean_surface_distance,
    normalized_surface_dice,
    surface_distances,
)


class VesselMetrics(PerVolumeMetric):
    """Dice, IoU, clDice, NSD, HD95 and MASD of binary vessel masks, per volume.

    Gives the same values as :class:`~minivess.metrics.overlap.Dice`,
    :class:`~minivess.metrics.overlap.IoU`, :class:`~minivess.metrics.cldice.ClDice`,
    :class:`~minivess.metrics.surface.NormalizedSurfaceDice`,
    :class:`~minivess.metrics.surface.HausdorffDistance95` and
    :class:`~minivess.metrics.surface.MeanSurfaceDistance` (see those for definitions and the
    empty-mask policy), but extracts each pair of surfaces once. It is one metric rather than a
    ``MetricCollection`` because collections merge metrics whose states look equal after the
    first batch, which per-volume scores can be by chance (e.g. all ones on empty masks).

    Args:
        tolerance_um: NSD tolerance in micrometres. Default 2 um.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: ``tolerance_um`` is negative or not finite.

    Example:
        >>> metrics = VesselMetrics(tolerance_um=2.0)
        >>> pred = torch.zeros(1, 8, 8, 4, dtype=torch.bool)
        >>> pred[0, 2:6, 3:5, :] = True
        >>> metrics.update(pred, pred, spacing=(1.0, 1.0, 5.0))
        >>> {name: float(value) for name, value in metrics.compute().items()}
        {'dice': 1.0, 'iou': 1.0, 'cldice': 1.0, 'nsd': 1.0, 'hd95': 0.0, 'masd': 0.0}
    """

    higher_is_better = None
    score_names: ClassVar[tuple[str, ...]] = ("dice", "iou", "cldice", "nsd", "hd95", "masd")

    def __init__(self, tolerance_um: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tolerance_um = check_tolerance(tolerance_um)

    def _score_batch(
        self, preds: Tensor, target: Tensor, spacings: list[Spacing]
    ) -> dict[str, Tensor]:
        rows: list[tuple[float, float, float, float]] = []
        for pred, ref, spacing in zip(as_numpy(preds), as_numpy(target), spacings, strict=True):
            distances = surface_distances(pred, ref, spacing)
            rows.append(
                (
                    cldice(pred, ref),
                    normalized_surface_dice(distances, self.tolerance_um),
                    hausdorff_distance_95(distances),
                    mean_surface_distance(distances),
                )
            )
        columns = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4).T
        return {
            "dice": dice_per_volume(preds, target),
            "iou": iou_per_volume(preds, target),
            **dict(zip(("cldice", "nsd", "hd95", "masd"), columns, strict=True)),
        }

    def compute(self) -> dict[str, Tensor]:
        """Mean of each metric over volumes, ignoring NaN (undefined) volumes.

        Returns:
            ``{"dice", "iou", "cldice", "nsd", "hd95", "masd"}`` -> scalar tensor (distances in
            um); NaN where no volume has a defined value.
        """
        return {name: torch.nanmean(self._values(name)) for name in self.score_names}

    def per_volume(self) -> dict[str, Tensor]:
        """Every per-volume value of each metric, in update order (rank order under DDP)."""
        return self._synced_values()

    def nan_counts(self) -> dict[str, int]:
        """How many volumes have an undefined (NaN) value, per metric, left out of ``compute``."""
        return {name: int(values.isnan().sum()) for name, values in self.per_volume().items()}
