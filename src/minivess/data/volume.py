"""The in-memory volume: voxels, geometry and where they came from, travelling together."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis: the length of each of the affine's first three columns."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((cols**2).sum(axis=0)))  # type: ignore[return-value]


def affine_from_spacing(spacing: tuple[float, float, float]) -> np.ndarray:
    """A diagonal affine for an axis-aligned volume with the given voxel size (no rotation)."""
    aff = np.eye(4, dtype=np.float64)
    aff[0, 0], aff[1, 1], aff[2, 2] = spacing
    return aff


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume with its geometry.

    Axis order is MONAI's spatial order (H, W, D), which is the NIfTI voxel order (i, j, k).
    Multi-page TIFF stacks (Z, Y, X) are transposed to (X, Y, Z) on reading.

    Args:
        array: Voxel values, 3D, in (H, W, D) order. Dtype is kept as stored on disk.
        affine: 4x4 voxel-to-world matrix in micrometres.
        source: File the volume was read from, if any.
        header: Format-specific header to reuse when writing a volume with this geometry
            (a ``nibabel.Nifti1Header`` for NIfTI input), so orientation codes survive.
        meta: Free-form extra facts (e.g. acquisition metadata).

    Example:
        >>> v = Volume(np.zeros((4, 5, 6), np.uint8), affine_from_spacing((1.0, 1.0, 5.0)))
        >>> v.shape, v.spacing
        ((4, 5, 6), (1.0, 1.0, 5.0))
    """

    array: np.ndarray
    affine: np.ndarray
    source: Path | None = None
    header: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (H, W, D)."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in micrometres along (H, W, D)."""
        return spacing_from_affine(self.affine)

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume with new voxels and this volume's geometry (shape must match)."""
        if tuple(array.shape[-3:]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.shape}")
        return replace(self, array=array)
