"""Demo views: slices and projections with a mask or a value map blended over them."""

from __future__ import annotations

import numpy as np
import pytest

from minivess.demo.views import (
    DISPLAY_MIN_SIDE,
    MASK_COLOUR,
    DisplayRange,
    enlarge,
    heat_overlay,
    mask_overlay,
    projection_view,
    slice_view,
)


@pytest.fixture
def volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(40, 30, 5)).astype(np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    mask[10, 20, 3] = 1
    return image, mask


def test_slice_is_shown_rows_y_enlarged_by_whole_pixels(volume) -> None:
    image, mask = volume
    display = DisplayRange.of(image)
    rgb = slice_view(image, mask, 3, display, mask=True)
    factor = DISPLAY_MIN_SIDE // 40
    assert rgb.shape == (30 * factor, 40 * factor, 3)
    assert rgb.dtype == np.uint8
    tinted = rgb[20 * factor, 10 * factor]  # voxel (x=10, y=20) in row y, column x
    assert tinted[0] > tinted[1] < tinted[2]  # magenta-ish
    plain = rgb[0, 0]
    assert plain[0] == plain[1] == plain[2]


def test_projection_sets_a_pixel_if_any_voxel_along_depth_is_vessel(volume) -> None:
    image, mask = volume
    display = DisplayRange.of(image)
    with_mask = projection_view(image, mask, display, mask=True)
    without = projection_view(image, np.zeros_like(mask), display, mask=True)
    changed = np.argwhere((with_mask != without).any(axis=-1))
    factor = DISPLAY_MIN_SIDE // 40
    assert {tuple(p // factor) for p in changed} == {(20, 10)}


def test_mask_colour_blends_over_grey() -> None:
    plane = np.full((2, 2), 10.0)
    mask = np.array([[1, 0], [0, 0]])
    rgb = mask_overlay(plane, mask, DisplayRange(0.0, 20.0))
    assert rgb[0, 0].tolist() != rgb[1, 1].tolist()
    assert np.all(rgb[0, 0] <= np.maximum(MASK_COLOUR, 128) + 1)


def test_heat_overlay_leaves_zero_values_grey() -> None:
    plane = np.full((3, 3), 5.0)
    values = np.zeros((3, 3))
    values[1, 1] = 1.0
    rgb = heat_overlay(plane, values, DisplayRange(0.0, 10.0))
    grey = rgb[0, 0]
    assert grey[0] == grey[1] == grey[2]
    assert rgb[1, 1].tolist() != grey.tolist()


def test_slice_outside_the_volume_is_refused(volume) -> None:
    image, mask = volume
    with pytest.raises(IndexError, match=r"outside 0\.\.4"):
        slice_view(image, mask, 5, DisplayRange.of(image), mask=True)


def test_small_images_are_enlarged_by_whole_pixels_only() -> None:
    small = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = enlarge(small, min_side=9)
    assert big.shape == (6, 9)
    np.testing.assert_array_equal(big[::3, ::3], small)
    large = np.zeros((600, 10), np.uint8)
    assert enlarge(large, min_side=512) is large
