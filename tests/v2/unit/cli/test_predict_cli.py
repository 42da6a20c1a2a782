"""``minivess predict``: a file or a folder in, NIfTI masks out, failures listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from minivess.cli.predict import predict
from minivess.errors import DataError
from minivess.inference import FolderPredictionError


def cli() -> typer.Typer:
    """The command as the ``minivess`` app registers it (a group, so the name is required)."""
    app = typer.Typer()
    app.command("predict")(predict)
    app.command("noop", hidden=True)(lambda: None)
    return app


@pytest.fixture
def images(prepared_synthetic, tmp_path: Path) -> Path:
    """A folder with two prepared NIfTI images and one corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted((prepared_synthetic.out / "images").iterdir())[:2]:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "zz_corrupt.tif").write_bytes(b"II*\x00 truncated")
    return folder


def test_single_file_writes_mask_and_probabilities(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    source = sorted(images.glob("*.nii.gz"))[0]
    out = tmp_path / "out"
    args = ["predict", str(source), "--model", str(checkpoint), "--out", str(out)]
    result = CliRunner().invoke(cli(), [*args, "--probabilities", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    stem = source.name.removesuffix(".nii.gz")
    mask, prob = out / f"{stem}_mask.nii.gz", out / f"{stem}_prob.nii.gz"
    assert result.stdout.split() == [str(mask), str(prob)]
    original = cast(Any, nib.load(str(source)))
    written = cast(Any, nib.load(str(mask)))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)


def test_folder_keeps_the_good_files_and_fails_listing_the_bad(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli(), ["predict", str(images), "--model", str(checkpoint), "--out", str(out)]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, FolderPredictionError)
    assert "1 of 3 volumes failed (zz_corrupt.tif)" in str(result.exception)
    assert len(list(out.glob("*_mask.nii.gz"))) == 2
    assert "zz_corrupt.tif" in result.output


def test_missing_input_is_a_data_error(checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli(), ["predict", str(tmp_path / "nope.tif"), "--model", str(checkpoint), "-o", "x"]
    )
    assert isinstance(result.exception, DataError)
    assert result.exception.rule == "missing-file"
