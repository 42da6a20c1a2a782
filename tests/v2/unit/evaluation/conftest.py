"""A tiny model and labelled crops of real VesselNN volumes for evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minivess.data.io import parse_ome_spacing, read_tiff
from minivess.data.volume import Volume, affine_from_spacing
from minivess.evaluation.evaluate import Case

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
PREDICTION_EXTRA = {
    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {
        "roi_size": [64, 64, 16],
        "overlap": 0.25,
        "sw_batch_size": 1,
        "precision": "fp32",
        "blend": "constant",
    },
}
#: (name, x, y) of a 48 x 40 crop with vessels in it.
REAL_CROPS = (("poon2015_plaqueVessels", 0, 96), ("burgess2014_bbbDisruption", 320, 48))


@pytest.fixture(scope="session")
def real_cases(vesselnn_dir: Path) -> list[Case]:
    """Two (id, image, label) crops of real volumes, 48 x 40 x Z, with their real voxel size."""
    cases = []
    for name, x, y in REAL_CROPS:
        image = read_tiff(next((vesselnn_dir / "denoised").glob(f"{name}_*")))
        label = read_tiff(next((vesselnn_dir / "labels").glob(f"{name}_*")))
        xml = (vesselnn_dir / "metadata" / f"{name}_metadata.xml.txt").read_bytes()
        spacing = parse_ome_spacing(xml)
        assert spacing is not None
        affine = affine_from_spacing(spacing)
        window = (slice(x, x + 48), slice(y, y + 40), slice(None))
        cases.append(
            (
                name,
                Volume(np.ascontiguousarray(image.array[window]), affine),
                Volume(np.ascontiguousarray(label.array[window]), affine),
            )
        )
    return cases
