"""Volume I/O: geometry travels with voxels, predictions keep their input's geometry exactly."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from minivess.data.io import read_volume, write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import DataError

OBLIQUE = np.array(
    [[0.0, -0.5, 0.0, 10.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]]
)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, unit: str = "micron") -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units(xyz=unit)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    nib.save(img, str(path))


def test_nifti_prediction_keeps_input_geometry_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "image.nii.gz"
    _save_nifti(src, rng.random((7, 6, 5), dtype=np.float32), OBLIQUE)
    image = read_volume(src)
    mask = (image.array > 0.5).astype(np.uint8)

    out = write_nifti(tmp_path / "mask.nii.gz", mask, like=image)

    written, original = nib.load(str(out)), nib.load(str(src))
    assert written.shape == original.shape
    np.testing.assert_array_equal(written.affine, original.affine)
    assert written.header.get_qform(coded=True)[1] == 1
    assert written.header.get_sform(coded=True)[1] == 2
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(original.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask)


def test_nifti_units_are_converted_to_micrometres(tmp_path: Path) -> None:
    path = tmp_path / "mm.nii"
    _save_nifti(
        path, np.zeros((4, 4, 4), np.uint8), affine_from_spacing((0.001, 0.001, 0.005)), "mm"
    )
    assert read_volume(path).spacing == pytest.approx((1.0, 1.0, 5.0))


def test_tiff_stack_is_read_in_hwd_order_with_ome_spacing(tmp_path: Path) -> None:
    zyx = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        path,
        zyx,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.6, "PhysicalSizeZ": 5.0},
    )
    vol = read_volume(path)
    assert vol.shape == (5, 4, 3)
    assert vol.spacing == pytest.approx((0.5, 0.6, 5.0))
    assert vol.array[4, 3, 2] == zyx[2, 3, 4]
    assert vol.meta["spacing_source"] == "ome"


def test_real_tiff_round_trips_through_nifti(vesselnn_dir: Path, tmp_path: Path) -> None:
    from minivess.data.io import read_tiff

    image = read_tiff(
        vesselnn_dir / "denoised" / "burgess2014_noisySparseVessels_BM4D_denoised.tif",
        spacing=(0.994, 0.994, 5.0),
    )
    back = read_volume(write_nifti(tmp_path / "x.nii.gz", image.array, like=image))
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert back.spacing == pytest.approx(image.spacing, abs=1e-6)


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("truncated.nii.gz", None, "corrupt-file"),
        ("garbage.tif", b"II*\x00garbage", "corrupt-file"),
        ("notes.txt", b"hello", "file-type"),
    ],
)
def test_broken_files_raise_data_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes | None, rule: str
) -> None:
    path = tmp_path / name
    if content is None:
        rng = np.random.default_rng(1)
        _save_nifti(tmp_path / "ok.nii.gz", rng.random((16, 16, 16), dtype=np.float32), np.eye(4))
        path.write_bytes((tmp_path / "ok.nii.gz").read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_volume(path)
    assert err.value.rule == rule
    assert name in str(err.value)


def test_two_dimensional_and_zero_spacing_files_are_refused(tmp_path: Path) -> None:
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.uint8), np.eye(4)), str(flat))
    with pytest.raises(DataError, match="dimensionality"):
        read_volume(flat)
    zero = tmp_path / "zero.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(zero))
    raw = bytearray(zero.read_bytes())
    raw[88:92] = np.float32(0.0).tobytes()  # pixdim[3]: the z voxel size, as a broken tool writes
    zero.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="spacing"):
        read_volume(zero)


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    like = Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        write_nifti(tmp_path / "bad.nii.gz", np.zeros((3, 3, 3), np.uint8), like=like)
    assert list(tmp_path.iterdir()) == []


def test_gzip_member_is_valid_after_write(tmp_path: Path) -> None:
    like = Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    out = write_nifti(tmp_path / "m.nii.gz", np.ones((4, 4, 4), np.uint8), like=like)
    assert gzip.decompress(out.read_bytes())[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")
