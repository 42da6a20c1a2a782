"""Per-volume (per-crop) features whose distribution drift detection compares.

Each volume is cut into ``tile x tile x D`` crops (full depth), so a handful of volumes still
gives the statistical tests enough rows; every row describes one crop:

* raw intensity percentiles (``intensity_p1``, ``intensity_p50``, ``intensity_p99``): detector
  gain, offset and bit depth;
* ``contrast`` (``(p99 - p50) / (p99 + p50)``): vessel against tissue;
* ``noise`` (robust noise sigma from neighbouring-voxel differences, relative to ``p99 - p1``);
* ``spacing_h/w/d`` (micrometres): the acquisition grid;
* with a model: ``vessel_fraction_pred`` (share of voxels with P(vessel) > 0.5) and
  ``mean_uncertainty`` (mean binary entropy of P(vessel), in bits).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from minivess.data.volume import Volume
from minivess.errors import ConfigError, DataError

TILE = 128
"""Side (H and W) of the crops the features are computed on."""
IMAGE_FEATURES = (
    "intensity_p1",
    "intensity_p50",
    "intensity_p99",
    "contrast",
    "noise",
    "spacing_h",
    "spacing_w",
    "spacing_d",
)
MODEL_FEATURES = ("vessel_fraction_pred", "mean_uncertainty")
_MAD_TO_SIGMA = 1.4826 / np.sqrt(2.0)  # MAD of a difference of two noisy voxels -> sigma


def image_features(array: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Intensity, contrast, noise and spacing features of one crop."""
    x = np.asarray(array, dtype=np.float32)
    p1, p50, p99 = (float(v) for v in np.percentile(x, [1, 50, 99]))
    spread = max(p99 - p1, 1e-6)
    diff = np.diff(x, axis=0)
    noise = float(np.median(np.abs(diff - np.median(diff))) * _MAD_TO_SIGMA / spread)
    return {
        "intensity_p1": p1,
        "intensity_p50": p50,
        "intensity_p99": p99,
        "contrast": (p99 - p50) / max(p99 + p50, 1e-6),
        "noise": noise,
        "spacing_h": float(spacing[0]),
        "spacing_w": float(spacing[1]),
        "spacing_d": float(spacing[2]),
    }


def model_features(prob: np.ndarray) -> dict[str, float]:
    """Predicted vessel fraction and mean binary entropy (bits) of a P(vessel) crop."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return {
        "vessel_fraction_pred": float((p > 0.5).mean()),
        "mean_uncertainty": float(entropy.mean()),
    }


def _tiles(shape: tuple[int, int, int], tile: int) -> Iterable[tuple[slice, slice]]:
    """Full-depth windows of ``tile x tile`` covering the volume (one if it is smaller)."""
    rows = range(0, max(shape[0] - tile, 0) + 1, tile)
    cols = range(0, max(shape[1] - tile, 0) + 1, tile)
    for i in rows:
        for j in cols:
            yield slice(i, i + tile), slice(j, j + tile)


def volume_features(
    volume: Volume, *, volume_id: str, prob: np.ndarray | None = None, tile: int = TILE
) -> pd.DataFrame:
    """One row of features per crop of ``volume`` (columns ``id``, ``crop`` and the features).

    Args:
        volume: Raw intensities with their spacing.
        volume_id: Name stored in the ``id`` column.
        prob: P(vessel) on the volume's grid, to add the model features.
        tile: Crop side in voxels (H and W).

    Raises:
        DataError: ``prob`` does not match the volume's shape.
        ConfigError: ``tile`` is not positive.
    """
    if tile < 1:
        raise ConfigError(f"tile must be positive, got {tile}")
    array = np.asarray(volume.array)
    if prob is not None and tuple(np.shape(prob)) != volume.shape:
        raise DataError(volume.source, "shape", f"P(vessel) {np.shape(prob)} != {volume.shape}")
    rows = []
    for k, window in enumerate(_tiles(volume.shape, tile)):
        row: dict[str, float | str | int] = {"id": volume_id, "crop": k}
        row.update(image_features(array[window], volume.spacing))
        if prob is not None:
            row.update(model_features(np.asarray(prob)[window]))
        rows.append(row)
    return pd.DataFrame(rows)


def feature_table(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-volume tables; a DataError if there are none."""
    frames = list(frames)
    if not frames:
        raise DataError(None, "no-volumes", "no volume to compute drift features of")
    return pd.concat(frames, ignore_index=True)


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns a table has (image features, then model features if present)."""
    return [c for c in (*IMAGE_FEATURES, *MODEL_FEATURES) if c in table.columns]


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """A feature table written as CSV; a DataError naming missing columns."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, "unreadable", f"not a readable CSV feature table: {exc}") from None
    missing = [c for c in IMAGE_FEATURES if c not in table.columns]
    if missing:
        raise DataError(path, "columns", f"feature table lacks columns {missing}")
    return table
