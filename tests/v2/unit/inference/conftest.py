"""A tiny trained-looking model and small crops of real VesselNN volumes for prediction tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from minivess.adapters import ModelAdapter
from minivess.data.io import parse_ome_spacing, read_tiff
from minivess.data.volume import Volume, affine_from_spacing

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
PREDICTION_EXTRA = {
    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {
        "roi_size": [32, 32, 8],
        "overlap": 0.25,
        "sw_batch_size": 4,
        "precision": "fp32",
        "blend": "constant",
    },
}
REAL_NAME = "poon2015_plaqueVessels"


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_adapter: ModelAdapter) -> Path:
    """The tiny adapter saved with the preprocessing and window training writes."""
    return tiny_adapter.save_checkpoint(tmp_path / "model" / "best.pt", extra=PREDICTION_EXTRA)


@pytest.fixture(scope="session")
def real_crop(vesselnn_dir: Path) -> Volume:
    """A 64 x 48 x 14 crop of a real two-photon volume with its real voxel size (2.485 um)."""
    image = read_tiff(next((vesselnn_dir / "denoised").glob(f"{REAL_NAME}_*")))
    spacing = parse_ome_spacing(
        (vesselnn_dir / "metadata" / f"{REAL_NAME}_metadata.xml.txt").read_bytes()
    )
    assert spacing is not None
    crop = np.ascontiguousarray(image.array[0:64, 96:144, :])
    return Volume(crop, affine_from_spacing(spacing))


@pytest.fixture
def real_tiff(tmp_path: Path, real_crop: Volume) -> Path:
    """The real crop as an OME-TIFF (Z, Y, X) carrying its physical voxel size."""
    path = tmp_path / "inputs" / "crop.ome.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    sx, sy, sz = real_crop.spacing
    tifffile.imwrite(
        path,
        np.transpose(real_crop.array, (2, 1, 0)),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": sx, "PhysicalSizeY": sy, "PhysicalSizeZ": sz},
    )
    return path
