"""Evaluation figures: metric distributions over volumes, and one overlay sheet per volume.

Figures are :class:`matplotlib.figure.Figure` objects rendered by Agg (no ``pyplot``, no global
backend, no window). Overlays colour true positives, false positives and false negatives as the
training run's figures do (:mod:`minivess.tracking.plots`), so both read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from minivess.data.io import atomic_path
from minivess.errors import DataError
from minivess.evaluation.bootstrap import MetricSummary
from minivess.tracking.plots import FN_COLOUR, FP_COLOUR, TP_COLOUR, overlay_rgb

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Units shown on the metric axes (distances are in micrometres).
METRIC_UNITS = {"hd95": "um", "masd": "um"}
#: Scores bounded by [0, 1], drawn on that full range so panels compare honestly.
UNIT_INTERVAL = frozenset({"dice", "iou", "cldice", "nsd"})


@dataclass(frozen=True)
class VolumeViews:
    """The 2D views an overlay sheet shows, kept instead of whole volumes.

    Args:
        slice_index: Depth index of the middle slice.
        image_slice: Intensities of the middle slice ``(H, W)``.
        label_slice: Reference mask of the middle slice (bool).
        pred_slice: Predicted mask of the middle slice (bool).
        image_mip: Maximum-intensity projection of the image along depth.
        label_mip: Projection of the reference mask (a voxel is set if any along depth is).
        pred_mip: Projection of the predicted mask.
    """

    slice_index: int
    image_slice: np.ndarray
    label_slice: np.ndarray
    pred_slice: np.ndarray
    image_mip: np.ndarray
    label_mip: np.ndarray
    pred_mip: np.ndarray


def volume_views(image: np.ndarray, label: np.ndarray, prediction: np.ndarray) -> VolumeViews:
    """Middle depth slice and maximum projection of a volume, its label and its prediction.

    Args:
        image: ``(H, W, D)`` intensities.
        label: ``(H, W, D)`` mask, non-zero = vessel.
        prediction: ``(H, W, D)`` mask, non-zero = vessel.

    Raises:
        DataError: The three arrays do not share one 3D shape.
    """
    if not image.shape == label.shape == prediction.shape or image.ndim != 3:
        raise DataError(
            None,
            "overlay-shape",
            f"image {image.shape}, label {label.shape} and prediction {prediction.shape} must "
            "share one (H, W, D) shape",
        )
    middle = image.shape[2] // 2
    truth, pred = label != 0, prediction != 0
    return VolumeViews(
        slice_index=middle,
        image_slice=np.asarray(image[:, :, middle], dtype=np.float32),
        label_slice=truth[:, :, middle],
        pred_slice=pred[:, :, middle],
        image_mip=np.asarray(image.max(axis=2), dtype=np.float32),
        label_mip=truth.any(axis=2),
        pred_mip=pred.any(axis=2),
    )


def case_figure(views: VolumeViews, title: str) -> Figure:
    """Image, label and TP/FP/FN overlay of the middle slice (top) and the projection (bottom).

    Volumes are (H, W, D) = (x, y, z); panels are transposed so rows are y, as the microscope
    recorded each plane.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(12, 8.6), layout="constrained")
    axes = figure.subplots(2, 3)
    rows = (
        (f"slice z = {views.slice_index}", views.image_slice, views.label_slice, views.pred_slice),
        ("max projection", views.image_mip, views.label_mip, views.pred_mip),
    )
    for ax_row, (name, image, label, pred) in zip(axes, rows, strict=True):
        ax_row[0].imshow(image.T, cmap="gray", interpolation="nearest")
        ax_row[0].set_title(f"image, {name}")
        ax_row[1].imshow(label.T, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        ax_row[1].set_title(f"label, {name}")
        overlay = overlay_rgb(image, label, pred)
        ax_row[2].imshow(overlay.transpose(1, 0, 2), interpolation="nearest")
        ax_row[2].set_title(f"prediction, {name}")
        for ax in ax_row:
            ax.set_axis_off()
    legend = [
        Patch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=n)
        for c, n in ((TP_COLOUR, "TP"), (FP_COLOUR, "FP"), (FN_COLOUR, "FN"))
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=3, frameon=False)
    figure.suptitle(title)
    return figure


def metrics_figure(
    table: pd.DataFrame, summary: Mapping[str, MetricSummary], metrics: Sequence[str]
) -> Figure:
    """One panel per metric: box plot of the per-volume values, each volume as a dot.

    Args:
        table: Per-volume table with one column per metric.
        summary: Mean and interval per metric, shown in each panel's title.
        metrics: Columns to plot, in order.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.6 * len(metrics), 4.2), layout="constrained")
    jitter = np.random.default_rng(0)  # fixed, so the same table draws the same figure
    for ax, name in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        values = table[name].to_numpy(dtype=np.float64)
        defined = values[~np.isnan(values)]
        if defined.size:
            ax.boxplot(defined, widths=0.5, showfliers=False)
            x = 1 + jitter.uniform(-0.12, 0.12, defined.size)
            ax.scatter(x, defined, s=14, alpha=0.7, zorder=3)
        ax.set_xticks([])
        if name in UNIT_INTERVAL:
            ax.set_ylim(-0.02, 1.02)
        unit = METRIC_UNITS.get(name)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.set_title(_panel_title(name, summary.get(name)), fontsize=9)
    return figure


def _panel_title(name: str, stats: MetricSummary | None) -> str:
    if stats is None or stats.n == 0:
        return f"{name}: no defined value"
    title = f"{name} {stats.mean:.3f}\n[{stats.ci_low:.3f}, {stats.ci_high:.3f}]"
    return f"{title}, {stats.n_nan} NaN" if stats.n_nan else title


def save_png(figure: Figure, path: str | Path) -> Path:
    """Render ``figure`` to a PNG at ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
