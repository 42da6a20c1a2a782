"""The fingerprint of a prepared dataset: what a planner needs to know about its volumes.

Per volume: shape and voxel size (from the manifest), intensity percentiles, the vessel
fraction, and the distribution of vessel radii. Radii are measured in the imaging plane: a
Euclidean distance transform of each label slice (in micrometres) read at its ridge voxels
(local maxima of the distance within 3x3 in-plane neighbours), which sit on vessel centrelines
and hold the distance to the vessel wall. In-plane, because two-photon stacks are sampled
several times more coarsely in depth (VesselNN: 5 um) than most vessels are wide.

Example:
    >>> fp = fingerprint_dataset("data/prepared/vesselnn")  # doctest: +SKIP
    >>> fp.spacing_range("h")  # doctest: +SKIP
    (0.621, 2.485)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from minivess.data.datasets import DATASET_INFO, read_dataset_version
from minivess.data.io import read_volume
from minivess.data.manifest import read_manifest

INTENSITY_PERCENTILES = (0.5, 1.0, 50.0, 99.0, 99.5, 99.8)
"""Percentiles of each image's intensities recorded in the fingerprint."""
RADIUS_PERCENTILES = (10.0, 50.0, 90.0)
"""Percentiles of each volume's vessel radii recorded in the fingerprint."""
_AXES = {"h": 0, "w": 1, "d": 2}


@dataclass(frozen=True)
class VolumeFingerprint:
    """What the planner knows about one volume.

    Args:
        id: Volume id in the manifest.
        shape: Voxels along (H, W, D).
        spacing: Voxel size in micrometres along (H, W, D).
        vessel_fraction: Fraction of label voxels that are vessel.
        intensity: Image intensity at each of :data:`INTENSITY_PERCENTILES` (``"p50"`` ...).
        radius_um: Vessel radius in micrometres at each of :data:`RADIUS_PERCENTILES`.
        radius_voxels: The same radii in in-plane voxels (divided by the mean in-plane size).
    """

    id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    vessel_fraction: float
    intensity: dict[str, float]
    radius_um: dict[str, float]
    radius_voxels: dict[str, float]


@dataclass(frozen=True)
class DatasetFingerprint:
    """The fingerprint of a prepared dataset: one :class:`VolumeFingerprint` per volume.

    Args:
        dataset_dir: The prepared dataset folder.
        name: Dataset name from ``dataset.json``.
        version: Content version of the dataset.
        volumes: Per-volume fingerprints, in manifest order.
    """

    dataset_dir: Path
    name: str
    version: str
    volumes: tuple[VolumeFingerprint, ...]

    def median_shape(self) -> tuple[int, int, int]:
        """Median number of voxels along (H, W, D) over volumes (rounded down)."""
        shapes = np.array([v.shape for v in self.volumes])
        return tuple(int(s) for s in np.median(shapes, axis=0))  # type: ignore[return-value]

    def median_spacing(self) -> tuple[float, float, float]:
        """Median voxel size in micrometres along (H, W, D) over volumes."""
        spacings = np.array([v.spacing for v in self.volumes])
        return tuple(float(s) for s in np.median(spacings, axis=0))  # type: ignore[return-value]

    def spacing_range(self, axis: str) -> tuple[float, float]:
        """Smallest and largest voxel size (um) along ``axis`` (``"h"``, ``"w"`` or ``"d"``)."""
        values = [v.spacing[_AXES[axis]] for v in self.volumes]
        return min(values), max(values)

    def total_voxels(self) -> int:
        """Voxels in all volumes together."""
        return int(sum(int(np.prod(v.shape)) for v in self.volumes))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values: summary statistics first, then every volume."""
        fractions = [v.vessel_fraction for v in self.volumes]
        return {
            "dataset_dir": str(self.dataset_dir),
            "name": self.name,
            "version": self.version,
            "n_volumes": len(self.volumes),
            "median_shape": list(self.median_shape()),
            "median_spacing_um": [round(s, 4) for s in self.median_spacing()],
            "spacing_range_um": {a: [round(x, 4) for x in self.spacing_range(a)] for a in _AXES},
            "vessel_fraction": {
                "min": round(min(fractions), 4),
                "median": round(float(np.median(fractions)), 4),
                "max": round(max(fractions), 4),
            },
            "volumes": [_rounded(asdict(v)) for v in self.volumes],
        }


def fingerprint_dataset(dataset_dir: str | Path) -> DatasetFingerprint:
    """Fingerprint every volume of a prepared dataset (reads each image and label once).

    Args:
        dataset_dir: A folder written by ``minivess data prepare``.

    Returns:
        The fingerprint.

    Raises:
        DataError: Not a prepared dataset, or a volume cannot be read.
    """
    import json

    folder = Path(dataset_dir)
    version = read_dataset_version(folder)
    name = json.loads((folder / DATASET_INFO).read_text(encoding="utf-8")).get("name", folder.name)
    manifest = read_manifest(folder / "manifest.csv")
    volumes = tuple(
        fingerprint_volume(
            str(row["id"]),
            read_volume(folder / str(row["image"])).array,
            read_volume(folder / str(row["label"])).array != 0,
            (float(row["spacing_h"]), float(row["spacing_w"]), float(row["spacing_d"])),
        )
        for row in manifest.to_dict("records")
    )
    return DatasetFingerprint(folder.resolve(), str(name), version, volumes)


def fingerprint_volume(
    case_id: str, image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float]
) -> VolumeFingerprint:
    """The fingerprint of one volume.

    Args:
        case_id: Volume id.
        image: Intensities, (H, W, D).
        label: Boolean vessel mask of the same shape.
        spacing: Voxel size in micrometres along (H, W, D).

    Returns:
        The volume's fingerprint (radii NaN when the label is empty).
    """
    intensities = np.percentile(image, INTENSITY_PERCENTILES)
    radii = vessel_radii(label, spacing[:2])
    in_plane = (spacing[0] + spacing[1]) / 2.0
    if radii.size:
        radius = np.percentile(radii, RADIUS_PERCENTILES)
    else:
        radius = np.full(len(RADIUS_PERCENTILES), np.nan)
    return VolumeFingerprint(
        id=case_id,
        shape=tuple(int(s) for s in image.shape),  # type: ignore[arg-type]
        spacing=spacing,
        vessel_fraction=float(np.count_nonzero(label)) / label.size,
        intensity={
            _key(p): float(v) for p, v in zip(INTENSITY_PERCENTILES, intensities, strict=True)
        },
        radius_um={_key(p): float(v) for p, v in zip(RADIUS_PERCENTILES, radius, strict=True)},
        radius_voxels={
            _key(p): float(v) / in_plane for p, v in zip(RADIUS_PERCENTILES, radius, strict=True)
        },
    )


def vessel_radii(label: np.ndarray, in_plane_spacing: tuple[float, float]) -> np.ndarray:
    """In-plane vessel radii (um) of a boolean (H, W, D) mask, one per ridge voxel.

    Each depth slice gets a Euclidean distance transform in micrometres; a vessel voxel whose
    distance is the largest among its 3x3 in-plane neighbours lies on a centreline and its
    distance is the local radius.

    Example:
        >>> mask = np.zeros((9, 9, 1), bool)
        >>> mask[:, 3:6, 0] = True  # a vessel 3 voxels wide
        >>> sorted(set(vessel_radii(mask, (1.0, 1.0)).tolist()))
        [2.0]
    """
    distance = np.zeros(label.shape, dtype=np.float32)
    for k in range(label.shape[2]):
        if label[:, :, k].any():
            distance[:, :, k] = ndi.distance_transform_edt(
                label[:, :, k], sampling=in_plane_spacing
            )
    ridge = label & (distance >= ndi.maximum_filter(distance, size=(3, 3, 1)))
    return distance[ridge].astype(np.float64)


def _key(percentile: float) -> str:
    return f"p{percentile:g}".replace(".", "_")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
