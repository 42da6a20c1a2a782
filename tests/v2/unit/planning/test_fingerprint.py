"""Dataset fingerprints: radii from the distance transform, and what a prepared dataset holds."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.data.manifest import read_manifest
from minivess.data.prepare import PreparedDataset
from minivess.planning import fingerprint_dataset
from minivess.planning.fingerprint import fingerprint_volume, vessel_radii


def tube(width: int, shape: tuple[int, int, int] = (32, 32, 3)) -> np.ndarray:
    """A straight vessel along H, ``width`` voxels wide in W, through every slice."""
    mask = np.zeros(shape, dtype=bool)
    start = shape[1] // 2 - width // 2
    mask[:, start : start + width, :] = True
    return mask


@pytest.mark.parametrize("width", [3, 5, 9])
def test_radius_is_the_centreline_distance_to_the_wall(width: int) -> None:
    radii = vessel_radii(tube(width), (1.0, 1.0))
    assert radii.size > 0
    assert np.median(radii) == pytest.approx(width // 2 + 1)


def test_radius_scales_with_in_plane_spacing_and_ignores_depth() -> None:
    fine = fingerprint_volume("a", np.zeros((32, 32, 3)), tube(5), (1.0, 1.0, 5.0))
    coarse = fingerprint_volume("b", np.zeros((32, 32, 3)), tube(5), (2.0, 2.0, 0.5))
    assert coarse.radius_um["p50"] == pytest.approx(2 * fine.radius_um["p50"])
    assert coarse.radius_voxels["p50"] == pytest.approx(fine.radius_voxels["p50"])


def test_empty_label_has_undefined_radii() -> None:
    empty = fingerprint_volume("e", np.ones((8, 8, 2)), np.zeros((8, 8, 2), bool), (1, 1, 1))
    assert empty.vessel_fraction == 0.0
    assert np.isnan(empty.radius_um["p50"])


def test_intensity_percentiles_are_of_the_image() -> None:
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    fp = fingerprint_volume("i", image, image > 500, (1, 1, 1))
    assert fp.intensity["p50"] == pytest.approx(499.5)
    assert fp.intensity["p99_8"] == pytest.approx(np.percentile(image, 99.8))
    assert fp.vessel_fraction == pytest.approx(0.499)


def test_fingerprint_of_a_prepared_dataset(prepared_synthetic: PreparedDataset) -> None:
    fp = fingerprint_dataset(prepared_synthetic.out)
    manifest = read_manifest(prepared_synthetic.out / "manifest.csv")
    assert fp.version == prepared_synthetic.version
    assert [v.id for v in fp.volumes] == list(manifest["id"])
    for volume, row in zip(fp.volumes, manifest.to_dict("records"), strict=True):
        assert volume.shape == (row["shape_h"], row["shape_w"], row["shape_d"])
        assert volume.vessel_fraction == pytest.approx(row["vessel_fraction"])
        assert 0 < volume.radius_um["p10"] <= volume.radius_um["p50"] <= volume.radius_um["p90"]
    summary = fp.to_dict()
    assert summary["median_shape"] == [64, 64, 16]
    assert summary["n_volumes"] == len(manifest)
    assert fp.total_voxels() == len(manifest) * 64 * 64 * 16
