from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import skeletonize

from minivess.data import synthetic
from minivess.data.io import read_volume
from minivess.data.synthetic import make_vessel_volume, paint_tubes, write_synthetic_dataset
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import ConfigError

SEEDS = (0, 1, 2)
SMALL = (64, 64, 16)
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module")
def default_volumes() -> dict[int, tuple[Volume, Volume]]:
    """Default-sized volumes, made once: most tests only look at them."""
    return {seed: make_vessel_volume(seed=seed) for seed in SEEDS}


def n_components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=FULL_CONNECTIVITY)[1])


def test_same_seed_gives_identical_volumes(default_volumes):
    image, label = make_vessel_volume(seed=1)
    np.testing.assert_array_equal(image.array, default_volumes[1][0].array)
    np.testing.assert_array_equal(label.array, default_volumes[1][1].array)


def test_different_seeds_give_different_volumes(default_volumes):
    (image0, label0), (image1, label1) = default_volumes[0], default_volumes[1]
    assert not np.array_equal(label0.array, label1.array)
    assert not np.array_equal(image0.array, image1.array)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((96, 96, 24), (1.0, 1.0, 5.0)), ((40, 33, 9), (0.621, 0.8, 4.5)), ((20, 20, 20), (2.0,) * 3)],
)
def test_shape_dtype_and_geometry(shape, spacing):
    image, label = make_vessel_volume(shape, spacing, seed=3)
    for vol in (image, label):
        assert vol.shape == shape
        assert vol.array.dtype == np.uint8
        assert vol.spacing == pytest.approx(spacing)
        np.testing.assert_allclose(vol.affine, affine_from_spacing(spacing))
    assert set(np.unique(label.array)) == {0, 1}


def test_default_vessel_fraction_is_like_real_data(default_volumes):
    for _, label in default_volumes.values():
        assert 0.03 < label.array.mean() < 0.15


@pytest.mark.parametrize("fraction", [0.03, 0.08, 0.15])
def test_vessel_fraction_follows_the_target(fraction):
    for seed in SEEDS[:2]:
        _, label = make_vessel_volume(SMALL, seed=seed, vessel_fraction=fraction)
        assert 0.9 * fraction < label.array.mean() < 1.2 * fraction


@pytest.mark.parametrize("n_trees", [1, 3, 6])
def test_every_vessel_belongs_to_one_of_the_trees(n_trees):
    for seed in SEEDS[:2]:
        _, label = make_vessel_volume(SMALL, seed=seed, n_trees=n_trees)
        assert 1 <= n_components(label.array) <= n_trees


def test_vessels_branch(default_volumes):
    _, label = default_volumes[0]
    skeleton = skeletonize(label.array.astype(bool))
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), FULL_CONNECTIVITY.astype(np.uint8))
    branch_points = skeleton & (neighbours >= 4)  # itself plus at least three neighbours
    assert branch_points.sum() >= 5


def test_signal_attenuates_with_depth(default_volumes):
    for image, label in default_volumes.values():
        depth = image.shape[2]
        top = image.array[..., : depth // 4][label.array[..., : depth // 4] > 0]
        bottom = image.array[..., -(depth // 4) :][label.array[..., -(depth // 4) :] > 0]
        assert top.mean() > 1.2 * bottom.mean()


def test_vessels_stand_out_but_not_trivially(default_volumes):
    for image, label in default_volumes.values():
        vessel = label.array > 0
        assert image.array[vessel].mean() > image.array[~vessel].mean() + 30
        guess = image.array > threshold_otsu(image.array)
        dice = 2 * (guess & vessel).sum() / (guess.sum() + vessel.sum())
        assert 0.5 < dice < 0.99


def test_background_is_noisy_and_dim(default_volumes):
    image, label = default_volumes[0]
    background = image.array[label.array == 0].astype(np.float64)
    assert background.mean() < 50
    assert background.std() > 3


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 5.0), (0.5, 2.0, 3.0)])
@pytest.mark.parametrize("axis", [0, 2])
def test_tube_radius_spans_radius_over_spacing_voxels(spacing, axis):
    radius = 6.0
    shape = (41, 41, 41)
    centre = np.array([20 * s for s in spacing])  # on a voxel centre
    start, end = centre.copy(), centre.copy()
    start[axis], end[axis] = 0.0, 40 * spacing[axis]
    mask = np.zeros(shape, dtype=bool)
    paint_tubes(mask, spacing, [(np.stack([start, end]), radius)])
    for other in {0, 1, 2} - {axis}:
        line = [20, 20, 20]
        line[other] = slice(None)  # type: ignore[call-overload]
        assert mask[tuple(line)].sum() == 2 * int(radius / spacing[other]) + 1
    assert mask.sum(axis=axis).max() == shape[axis]  # the tube runs the full length


def test_tube_thinner_than_a_voxel_stays_one_piece():
    mask = np.zeros((30, 30, 8), dtype=bool)
    path = np.array([[0.0, 0.0, 0.0], [29.0, 17.0, 35.0]])
    paint_tubes(mask, (1.0, 1.0, 5.0), [(path, 0.2)])
    assert mask[0, 0, 0]
    assert mask[29, 17, 7]
    assert n_components(mask) == 1


def test_paint_tubes_needs_a_boolean_mask():
    with pytest.raises(ValueError, match="boolean"):
        paint_tubes(np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0), [])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shape": (10, 10)}, "shape"),
        ({"shape": (10, 0, 4)}, "shape"),
        ({"spacing": (1.0, -1.0, 5.0)}, "spacing"),
        ({"spacing": (1.0, float("nan"), 5.0)}, "spacing"),
        ({"n_trees": 0}, "n_trees"),
        ({"vessel_fraction": 0.0}, "vessel_fraction"),
        ({"vessel_fraction": 0.7}, "vessel_fraction"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        make_vessel_volume(**kwargs)


def test_write_synthetic_dataset_writes_readable_pairs(tmp_path: Path):
    spacing = (0.8, 0.8, 4.0)
    paths = write_synthetic_dataset(tmp_path, n=2, seed=5, shape=(32, 30, 8), spacing=spacing)
    assert [p.name for p in paths] == ["synth000.nii.gz", "synth001.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == [p.name for p in paths]
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == [p.name for p in paths]
    for i, path in enumerate(paths):
        expected_image, expected_label = make_vessel_volume((32, 30, 8), spacing, seed=5 + i)
        image, label = read_volume(path), read_volume(tmp_path / "labelsTr" / path.name)
        np.testing.assert_array_equal(image.array, expected_image.array)
        np.testing.assert_array_equal(label.array, expected_label.array)
        assert image.spacing == pytest.approx(spacing)
        assert label.spacing == pytest.approx(spacing)
        assert image.array.dtype == label.array.dtype == np.uint8


def test_write_synthetic_dataset_refuses_zero_pairs(tmp_path: Path):
    with pytest.raises(ConfigError, match="n must be"):
        write_synthetic_dataset(tmp_path, n=0)
    assert list(tmp_path.iterdir()) == []


def test_decathlon_source_reads_the_written_dataset(tmp_path: Path):
    minivess_sources = pytest.importorskip("minivess.data.sources.minivess")
    write_synthetic_dataset(tmp_path, n=2, shape=(24, 24, 6))
    source = minivess_sources.DecathlonSource()
    assert source.detect(tmp_path)
    cases = source.discover(tmp_path)
    assert [c.case_id for c in cases] == ["synth000", "synth001"]
    image, label = source.load(cases[1])
    expected_image, expected_label = make_vessel_volume((24, 24, 6), seed=1)
    np.testing.assert_array_equal(image.array, expected_image.array)
    assert label is not None
    np.testing.assert_array_equal(label.array, expected_label.array)


def test_docstring_examples_run():
    result = doctest.testmod(synthetic, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
