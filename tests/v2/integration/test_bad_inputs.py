"""Hostile and malformed input to the CLI and ``data prepare``: one line, exit code 2, no output.

Each case runs the real ``minivess`` entry point (``minivess.cli.main.main``) in this process
and checks the exit code, the rule named in the message, that no traceback was printed and
that no partial output was left. The REST service's and the demo's refusals of the same kinds
of file are tested over HTTP in ``test_service.py`` and ``test_demo.py``; docs/reliability.md
lists all of them.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from minivess.cli.main import main

pytestmark = pytest.mark.integration

Case = Callable[[Path, Path], list[str]]
"""Builds the bad input under a folder and returns the CLI arguments (given the checkpoint)."""


def _nifti(path: Path, array: np.ndarray, zooms: tuple[float, ...] | None = None) -> Path:
    image = nib.Nifti1Image(array, np.eye(4))
    if zooms is not None:
        image.header.set_zooms(zooms)
    nib.save(image, str(path))
    return path


def _predict(volume: Path, checkpoint: Path) -> list[str]:
    return ["predict", str(volume), "--model", str(checkpoint), "--out", str(volume.parent / "out")]


def _truncated(root: Path, model: Path) -> list[str]:
    whole = _nifti(root / "whole.nii.gz", np.ones((32, 32, 8), np.float32))
    cut = root / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[:200])
    return _predict(cut, model)


def _not_gzip(root: Path, model: Path) -> list[str]:
    fake = root / "fake.nii.gz"
    fake.write_bytes(b"\x1f\x8b not really gzip, not a NIfTI")
    return _predict(fake, model)


def _text_as_tiff(root: Path, model: Path) -> list[str]:
    text = root / "notes.tif"
    text.write_text("this is not a volume")
    return _predict(text, model)


def _wrong_suffix(root: Path, model: Path) -> list[str]:
    png = root / "slice.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    return _predict(png, model)


def _two_d(root: Path, model: Path) -> list[str]:
    return _predict(_nifti(root / "flat.nii.gz", np.ones((32, 32), np.float32)), model)


def _four_d(root: Path, model: Path) -> list[str]:
    series = np.ones((16, 16, 8, 3), np.float32)
    return _predict(_nifti(root / "series.nii.gz", series), model)


def _nan(root: Path, model: Path) -> list[str]:
    voxels = np.ones((32, 32, 8), np.float32)
    voxels[3, 4, 5] = np.nan
    return _predict(_nifti(root / "nan.nii.gz", voxels), model)


def _inf(root: Path, model: Path) -> list[str]:
    voxels = np.ones((32, 32, 8), np.float32)
    voxels[1, 1, 1] = np.inf
    return _predict(_nifti(root / "inf.nii.gz", voxels), model)


def _complex_dtype(root: Path, model: Path) -> list[str]:
    voxels = np.ones((32, 32, 8), np.complex64)
    return _predict(_nifti(root / "complex.nii.gz", voxels), model)


def _zero_spacing(root: Path, model: Path) -> list[str]:
    voxels = np.ones((32, 32, 8), np.float32)
    return _predict(_nifti(root / "zero.nii", voxels, zooms=(1.0, 0.0, 1.0)), model)


def _huge_declared(root: Path, model: Path) -> list[str]:
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    bomb = root / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 2**20))
    return _predict(bomb, model)


def _missing_input(root: Path, model: Path) -> list[str]:
    return _predict(root / "nothing.nii.gz", model)


def _empty_folder(root: Path, model: Path) -> list[str]:
    (root / "empty").mkdir()
    return _predict(root / "empty", model)


def _truncated_checkpoint(root: Path, model: Path) -> list[str]:
    cut = root / "cut.pt"
    cut.write_bytes(model.read_bytes()[:1000])
    return _predict(_nifti(root / "ok.nii.gz", np.ones((32, 32, 8), np.float32)), cut)


class _Payload:
    """Unpickling this would create a file: proof that the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _pickle_checkpoint(root: Path, model: Path) -> list[str]:
    hostile = root / "hostile.pt"
    hostile.write_bytes(
        pickle.dumps({"format": "minivess-checkpoint", "x": _Payload(root / "PWNED")})
    )
    return _predict(_nifti(root / "ok.nii.gz", np.ones((32, 32, 8), np.float32)), hostile)


def _prepare_label_geometry(root: Path, model: Path) -> list[str]:
    source = _decathlon(root)
    label = next((source / "labelsTr").iterdir())
    _nifti(label, np.zeros((10, 10, 4), np.uint8))
    return ["data", "prepare", str(source), "--out", str(root / "out"), "--folds", "2"]


def _prepare_label_values(root: Path, model: Path) -> list[str]:
    source = _decathlon(root)
    label = next((source / "labelsTr").iterdir())
    shape = nib.load(str(label)).shape
    _nifti(label, np.full(shape, 7, np.uint8))
    return ["data", "prepare", str(source), "--out", str(root / "out"), "--folds", "2"]


def _prepare_unknown_layout(root: Path, model: Path) -> list[str]:
    (root / "junk").mkdir()
    (root / "junk" / "readme.txt").write_text("no volumes here")
    return ["data", "prepare", str(root / "junk"), "--out", str(root / "out")]


def _train_resume_nothing(root: Path, model: Path) -> list[str]:
    return ["train", "--resume", str(root / "no-such-run")]


def _train_unwritable(root: Path, model: Path) -> list[str]:
    (root / "blocker").write_text("a file where the run folder should go")
    return ["train", "--run-dir", str(root / "blocker" / "run"), "--no-tracking"]


_SYNTHETIC: list[Path] = []


def _decathlon(root: Path) -> Path:
    source = root / "source"
    shutil.copytree(_SYNTHETIC[0], source)
    return source


CASES: dict[str, tuple[Case, str]] = {
    "truncated gzip NIfTI": (_truncated, "[corrupt-file]"),
    "gzip magic, garbage": (_not_gzip, "[corrupt-file]"),
    "text named .tif": (_text_as_tiff, "[corrupt-file]"),
    "not a volume suffix": (_wrong_suffix, "[file-type]"),
    "2D image": (_two_d, "[dimensionality]"),
    "4D series": (_four_d, "[dimensionality]"),
    "NaN voxel": (_nan, "[non-finite]"),
    "Inf voxel": (_inf, "[non-finite]"),
    "complex dtype": (_complex_dtype, "[dtype]"),
    "zero voxel spacing": (_zero_spacing, "[spacing]"),
    "huge declared shape (gzip bomb)": (_huge_declared, "[too-many-voxels]"),
    "missing input": (_missing_input, "[missing-file]"),
    "empty input folder": (_empty_folder, "[no-volumes]"),
    "truncated checkpoint": (_truncated_checkpoint, "[unreadable]"),
    "pickle with code in a checkpoint": (_pickle_checkpoint, "[unreadable]"),
    "prepare: label geometry differs": (_prepare_label_geometry, "shape"),
    "prepare: label not binary": (_prepare_label_values, "label"),
    "prepare: unknown layout": (_prepare_unknown_layout, "layout"),
    "train: resume a missing run": (_train_resume_nothing, "no checkpoint"),
    "train: run folder not writable": (_train_unwritable, "cannot write to the output folder"),
}


@pytest.fixture(autouse=True)
def _synthetic(synthetic_dataset_dir: Path) -> None:
    _SYNTHETIC[:] = [synthetic_dataset_dir]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_clear_line_exit_2_and_no_output(
    case: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, expected = CASES[case]
    root = tmp_path / "case"
    root.mkdir()
    args = build(root, checkpoint)
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert exited.value.code == 2, printed
    assert "error:" in printed
    assert expected.lower() in printed.lower(), printed
    assert "Traceback" not in printed
    assert "internal error" not in printed
    assert not (root / "out").exists() or not any((root / "out").rglob("*.nii*"))
    assert not (root / "PWNED").exists()
