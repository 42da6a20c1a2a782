"""Figures logged with a run: training curves and predictions over held-out slices.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg rendering, no ``pyplot``),
so plotting never touches a global backend or opens a window, in a notebook or on a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from minivess.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minivess.tracking.run import TrackedRun

TP_COLOUR = (0, 200, 0)
"""Vessel in label and prediction (green)."""
FP_COLOUR = (230, 0, 0)
"""Predicted vessel that the label does not have (red)."""
FN_COLOUR = (0, 90, 255)
"""Labelled vessel the prediction missed (blue)."""
OVERLAY_ALPHA = 0.6


def loss_figure(history: Sequence[Mapping[str, float]]) -> Figure:
    """Training loss (and learning rate on a second axis) per epoch."""
    from matplotlib.figure import Figure

    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(epochs, [record["loss"] for record in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all("lr" in record for record in history):
        lr_ax = ax.twinx()
        lr_ax.plot(epochs, [r["lr"] for r in history], color="grey", linestyle="--")
        lr_ax.set_ylabel("learning rate", color="grey")
    ax.set_title("training loss")
    return figure


def metrics_figure(history: Sequence[Mapping[str, float]]) -> Figure | None:
    """Each ``val_*`` metric per validated epoch; ``None`` if nothing was validated."""
    from matplotlib.figure import Figure

    names = sorted({key for record in history for key in record if key.startswith("val_")})
    if not names:
        return None
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.add_subplot()
    for name in names:
        points = [(r["epoch"], r[name]) for r in history if name in r]
        ax.plot(*zip(*points, strict=True), marker="o", label=name.removeprefix("val_"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation metric")
    ax.legend()
    ax.set_title("validation")
    return figure


def overlay_rgb(image: np.ndarray, label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """A 2D slice in grey with TP/FP/FN voxels coloured (:data:`TP_COLOUR` etc.).

    Args:
        image: 2D intensities, shown between their 1st and 99th percentiles.
        label: 2D mask, non-zero = vessel.
        prediction: 2D mask, non-zero = vessel.

    Returns:
        ``uint8`` array ``(*image.shape, 3)``; true negatives stay grey.
    """
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    grey = np.clip((image.astype(np.float64) - low) / max(high - low, 1e-12), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    truth, pred = label != 0, prediction != 0
    for mask, colour in (
        (truth & pred, TP_COLOUR),
        (~truth & pred, FP_COLOUR),
        (truth & ~pred, FN_COLOUR),
    ):
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.asarray(colour)
    return np.round(rgb).astype(np.uint8)


def overlay_figure(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    *,
    title: str = "",
    n_slices: int = 3,
) -> Figure:
    """Predictions over ``n_slices`` depth slices spread evenly through a volume.

    Args:
        image: ``(H, W, D)`` or ``(1, H, W, D)`` intensities.
        label: Mask of the same spatial shape, non-zero = vessel.
        prediction: Mask of the same spatial shape, non-zero = vessel.
        title: Figure title (the volume Dice is appended).
        n_slices: Number of panels (at most D).

    Raises:
        DataError: The three arrays do not share one 3D shape.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image, label, prediction = (_spatial(a) for a in (image, label, prediction))
    if not image.shape == label.shape == prediction.shape or image.ndim != 3:
        raise DataError(
            None,
            "overlay-shape",
            f"image {image.shape}, label {label.shape} and prediction {prediction.shape} "
            "must share one (H, W, D) shape",
        )
    depth = image.shape[2]
    indices = np.unique(np.linspace(0, depth - 1, min(n_slices, depth) + 2)[1:-1].round())
    figure = Figure(figsize=(4 * len(indices), 4.4), layout="constrained")
    for ax, z in zip(figure.subplots(1, len(indices), squeeze=False)[0], indices, strict=True):
        d = int(z)
        # Volumes are (H, W, D) = (x, y, z); the transpose shows each slice as the microscope
        # recorded it (rows = y).
        rgb = overlay_rgb(image[:, :, d], label[:, :, d], prediction[:, :, d])
        ax.imshow(rgb.transpose(1, 0, 2), interpolation="nearest")
        ax.set_title(f"z = {d}")
        ax.set_axis_off()
    legend = [
        Patch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=n)
        for c, n in ((TP_COLOUR, "TP"), (FP_COLOUR, "FP"), (FN_COLOUR, "FN"))
    ]
    figure.legend(handles=legend, loc="lower center", ncols=3, frameon=False)
    figure.suptitle(f"{title}  Dice {_dice(label, prediction):.3f}".strip())
    return figure


def log_overlays(
    run: TrackedRun,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    n_slices: int = 3,
) -> list[str]:
    """Log one overlay PNG per held-out volume as ``overlays/<name>.png``.

    Args:
        run: The started run.
        images: Volumes ``(H, W, D)`` or ``(1, H, W, D)``.
        labels: Ground-truth masks, non-zero = vessel.
        predictions: Predicted masks (e.g. ``probs.argmax(0)``), non-zero = vessel.
        names: One name per volume (its case id).
        n_slices: Depth slices per figure.

    Returns:
        The artifact paths written.

    Raises:
        DataError: The sequences differ in length or a volume's arrays differ in shape.
    """
    if not len(images) == len(labels) == len(predictions) == len(names):
        raise DataError(
            None,
            "overlay-count",
            f"got {len(images)} images, {len(labels)} labels, {len(predictions)} predictions "
            f"and {len(names)} names; pass one of each per volume",
        )
    paths = []
    for image, label, prediction, name in zip(images, labels, predictions, names, strict=True):
        figure = overlay_figure(
            np.asarray(image),
            np.asarray(label),
            np.asarray(prediction),
            title=name,
            n_slices=n_slices,
        )
        path = f"overlays/{name}.png"
        run.log_figure(figure, path)
        paths.append(path)
    return paths


def _spatial(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array[0] if array.ndim == 4 and array.shape[0] == 1 else array


def _dice(label: np.ndarray, prediction: np.ndarray) -> float:
    truth, pred = label != 0, prediction != 0
    total = int(truth.sum() + pred.sum())
    return 1.0 if total == 0 else 2 * int((truth & pred).sum()) / total
