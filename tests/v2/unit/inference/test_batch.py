"""Folder prediction: a bad file is reported and skipped, the good ones are written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

from minivess.data.volume import Volume
from minivess.errors import DataError
from minivess.inference import FolderPredictionError, Predictor, predict_folder


@pytest.fixture
def mixed_folder(real_tiff: Path, real_crop: Volume) -> Path:
    """Two real volumes (OME-TIFF, NIfTI), one corrupt NIfTI, and a file that is not a volume."""
    folder = real_tiff.parent
    nib.save(nib.Nifti1Image(real_crop.array, real_crop.affine), str(folder / "b.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (folder / "notes.txt").write_text("not a volume")
    return folder


def test_corrupt_file_is_reported_and_the_others_written(
    checkpoint: Path, mixed_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    calls: list[tuple[int, int, str]] = []
    result = predict_folder(
        Predictor.from_source(checkpoint),
        mixed_folder,
        out,
        probabilities=True,
        progress=lambda done, total, path: calls.append((done, total, path.name)),
    )
    assert not result.ok
    assert list(result.failed) == [mixed_folder / "broken.nii.gz"]
    assert "broken.nii.gz" in result.failed[mixed_folder / "broken.nii.gz"]
    assert "corrupt-file" in result.failed[mixed_folder / "broken.nii.gz"]
    assert sorted(p.name for p in result.written) == ["b.nii.gz", "crop.ome.tif"]
    assert sorted(p.name for p in out.iterdir()) == [
        "b_mask.nii.gz",
        "b_prob.nii.gz",
        "crop_mask.nii.gz",
        "crop_prob.nii.gz",
    ]
    assert [c[0] for c in calls] == [1, 2, 3]
    assert {c[1] for c in calls} == {3}
    error = FolderPredictionError(result, out)
    assert "1 of 3 volumes failed (broken.nii.gz)" in str(error)


def test_folder_without_volumes_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("nothing here")
    with pytest.raises(DataError) as info:
        predict_folder(Predictor.from_source(checkpoint), tmp_path, tmp_path / "out")
    assert info.value.rule == "no-volumes"
