"""Upload checks: names, magic bytes and headers are judged before any voxel is decoded."""

from __future__ import annotations

import gzip
from http import HTTPStatus
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from minivess.data.io import write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.serving.uploads import UploadRejected, check_file_name, read_header, read_upload

LIMIT = 10_000


def _nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...] = (0.5, 0.5, 2.0)) -> Path:
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _rejected(call: object, status: HTTPStatus, rule: str) -> UploadRejected:
    assert callable(call)
    with pytest.raises(UploadRejected) as info:
        call()
    assert info.value.status == status
    assert info.value.rule == rule
    return info.value


@pytest.mark.parametrize("name", ["volume.nii.gz", "a.nii", "stack.ome.tif", "b.TIFF", "blob"])
def test_plain_volume_names_pass(name: str) -> None:
    check_file_name(name)


@pytest.mark.parametrize(
    "name", ["../../etc/x.nii.gz", "a/b.nii", "..\\x.tif", "..", "x\x00.nii", "a" * 300 + ".nii"]
)
def test_path_like_names_are_refused(name: str) -> None:
    error = _rejected(lambda: check_file_name(name), HTTPStatus.BAD_REQUEST, "file-name")
    assert "rename it" in error.message


def test_other_suffixes_and_text_fields_are_refused() -> None:
    _rejected(lambda: check_file_name("x.png"), HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "file-type")
    _rejected(lambda: check_file_name(None), HTTPStatus.BAD_REQUEST, "not-a-file")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_is_read_with_its_geometry(tmp_path: Path, suffix: str) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    upload = _nifti(tmp_path / f"tmpabc{suffix}", array)
    volume = read_upload(upload, tmp_path, max_voxels=LIMIT, name=upload.name)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx((0.5, 0.5, 2.0))
    assert not upload.exists()  # moved to a name the service chose


def test_tiff_is_read_in_xyz_order(tmp_path: Path) -> None:
    stack = np.random.default_rng(0).integers(0, 255, (3, 8, 5), dtype=np.uint8)  # (Z, Y, X)
    upload = tmp_path / "upload-bytes"
    tifffile.imwrite(upload, stack, photometric="minisblack")
    volume = read_upload(upload, tmp_path, max_voxels=LIMIT)
    assert volume.shape == (5, 8, 3)
    assert volume.meta["spacing_source"] == "default"


def test_content_that_is_no_volume_is_unsupported(tmp_path: Path) -> None:
    upload = tmp_path / "x.nii.gz"
    upload.write_text("hello, not a volume")
    _rejected(lambda: read_header(upload, LIMIT), HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "file-type")
    gz = tmp_path / "y.nii.gz"
    gz.write_bytes(gzip.compress(b"gzip, but no NIfTI inside" * 40))
    _rejected(lambda: read_header(gz, LIMIT), HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "file-type")


def test_2d_volume_is_refused_from_the_header(tmp_path: Path) -> None:
    flat = _nifti(tmp_path / "flat.nii.gz", np.zeros((20, 20), np.float32))
    error = _rejected(lambda: read_header(flat, LIMIT), HTTPStatus.BAD_REQUEST, "dimensionality")
    assert "(20, 20)" in error.message


def test_huge_header_is_refused_before_decompressing(tmp_path: Path) -> None:
    """A small .nii.gz whose header claims 10^9 voxels: refused without inflating anything."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\x00" * 4))
    error = _rejected(
        lambda: read_header(bomb, LIMIT), HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-many-voxels"
    )
    assert "1,000,000,000" in error.message


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    whole = _nifti(tmp_path / "whole.nii.gz", np.ones((20, 20, 20), np.float32))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[:200])
    error = _rejected(
        lambda: read_upload(cut, tmp_path, max_voxels=LIMIT),
        HTTPStatus.BAD_REQUEST,
        "corrupt-file",
    )
    assert str(tmp_path) not in error.message  # no server paths in client messages


def test_nan_voxels_and_bad_spacing_are_refused(tmp_path: Path) -> None:
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    nan = _nifti(tmp_path / "nan.nii", array)
    _rejected(
        lambda: read_upload(nan, tmp_path, max_voxels=LIMIT), HTTPStatus.BAD_REQUEST, "non-finite"
    )
    zero = _nifti(tmp_path / "zero.nii", np.ones((4, 4, 4), np.float32))
    raw = bytearray(zero.read_bytes())
    raw[84:88] = np.float32(0.0).tobytes()  # pixdim[2]: a zero voxel height
    zero.write_bytes(bytes(raw))
    _rejected(
        lambda: read_upload(zero, tmp_path, max_voxels=LIMIT), HTTPStatus.BAD_REQUEST, "spacing"
    )


def test_name_and_content_must_agree(tmp_path: Path) -> None:
    like = Volume(np.zeros((4, 4, 4), np.uint8), affine_from_spacing((1.0, 1.0, 1.0)))
    upload = write_nifti(tmp_path / "tmpxyz.nii.gz", like.array, like=like)
    _rejected(
        lambda: read_upload(upload, tmp_path, max_voxels=LIMIT, name="tmpxyzstack.tif"),
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "file-type",
    )
