"""Property-based tests of the volume readers: round trips hold, and no bytes crash them.

Whatever the bytes, :func:`~minivess.data.io.read_volume` returns a 3D volume or raises a
:class:`~minivess.errors.DataError`, and the service's header check returns a header or raises
an :class:`~minivess.serving.uploads.UploadRejected`; any other exception would be a 5xx or a
traceback.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minivess.data.io import read_volume, write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import DataError
from minivess.serving.uploads import UploadRejected, read_header

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.float32])
SHAPES = st.tuples(*(st.integers(1, 9) for _ in range(3)))
SPACING = st.tuples(*(st.floats(0.05, 20.0, allow_nan=False) for _ in range(3)))
SUFFIXES = (".nii.gz", ".nii", ".tif")


def _volume_bytes(suffix: str) -> bytes:
    """The bytes of a small valid volume file in the format of ``suffix``."""
    array = np.arange(6 * 5 * 4, dtype=np.uint16).reshape(6, 5, 4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{suffix}"
        if suffix == ".tif":
            tifffile.imwrite(path, array.transpose(2, 1, 0), photometric="minisblack")
        else:
            write_nifti(path, array, Volume(array, affine_from_spacing((1.0, 2.0, 3.0))))
        return path.read_bytes()


VALID = {suffix: _volume_bytes(suffix) for suffix in SUFFIXES}


@SETTINGS
@given(array=st.one_of(DTYPES).flatmap(lambda d: arrays(d, SHAPES)), spacing=SPACING)
def test_nifti_round_trip_keeps_voxels_and_spacing(
    array: np.ndarray, spacing: tuple[float, float, float], tmp_path: Path
) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", array, Volume(array, affine_from_spacing(spacing)))
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, spacing, rtol=1e-5)


@SETTINGS
@given(array=st.one_of(DTYPES).flatmap(lambda d: arrays(d, SHAPES)))
def test_tiff_round_trip_keeps_voxels_in_hwd_order(array: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.ascontiguousarray(array.transpose(2, 1, 0)), photometric="minisblack")
    np.testing.assert_array_equal(read_volume(path).array, array)


def _mangled(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """``data`` cut to ``cut`` bytes with some bytes replaced."""
    out = bytearray(data[: max(0, cut)])
    for position, value in flips:
        if out:
            out[position % len(out)] = value
    return bytes(out)


FLIPS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)


def _check_read(path: Path) -> None:
    try:
        volume = read_volume(path)
    except DataError as exc:
        refusal: str = str(exc)
    else:
        assert volume.array.ndim == 3
        return
    assert str(path) in refusal


@SETTINGS
@pytest.mark.parametrize("suffix", SUFFIXES)
@given(cut=st.integers(0, 2_000), flips=FLIPS)
def test_damaged_files_are_read_or_refused_with_a_data_error(
    suffix: str, cut: int, flips: list[tuple[int, int]], tmp_path: Path
) -> None:
    data = VALID[suffix]
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(_mangled(data, cut if cut < len(data) else len(data), flips))
    _check_read(path)


@SETTINGS
@pytest.mark.parametrize("suffix", SUFFIXES)
@given(data=st.binary(max_size=1_200))
def test_arbitrary_bytes_are_refused_with_a_data_error(
    suffix: str, data: bytes, tmp_path: Path
) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _check_read(path)


@SETTINGS
@given(
    kind=st.sampled_from(["nii", "nii.gz", "tif", "random"]),
    cut=st.integers(0, 2_000),
    flips=FLIPS,
    shape=st.tuples(*(st.integers(-5, 2**15 - 1) for _ in range(5))),
)
def test_upload_header_check_never_fails_with_anything_but_a_refusal(
    kind: str, cut: int, flips: list[tuple[int, int]], shape: tuple[int, ...], tmp_path: Path
) -> None:
    if kind == "random":
        data = _mangled(bytes(range(256)) * 8, cut, flips)
    elif kind == "tif":
        data = _mangled(VALID[".tif"], cut, flips)
    else:
        header = nib.Nifti1Header()
        header["dim"][0] = len(shape)
        header["dim"][1 : 1 + len(shape)] = shape
        block = header.binaryblock + b"\0" * 4
        data = gzip.compress(block) if kind == "nii.gz" else _mangled(block, cut + 348, flips)
    path = tmp_path / "upload"
    path.write_bytes(data)
    try:
        found = read_header(path, max_voxels=10**6)
    except UploadRejected as exc:
        status = int(exc.status)
    else:
        assert len(found.shape) == 3
        assert 0 < found.voxels <= 10**6
        return
    assert 400 <= status < 500
