"""Predict every volume of a folder, keeping going past bad files and reporting them at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from minivess.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES
from minivess.errors import DataError, MinivessError
from minivess.inference.predictor import Predictor

Progress = Callable[[int, int, Path], None]
"""Called as ``progress(done, total, path)`` after each file, failed or not."""


@dataclass
class FolderResult:
    """Outcome of :func:`predict_folder`.

    Args:
        written: Input file -> the files written for it, in input order.
        failed: Input file -> why it was skipped (the error message).
    """

    written: dict[Path, list[Path]] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every file was predicted."""
        return not self.failed


class FolderPredictionError(MinivessError):
    """Some files of a folder could not be predicted; the others were written.

    Args:
        result: What was written and what failed.
        out_dir: Where the successful predictions are.
    """

    def __init__(self, result: FolderResult, out_dir: Path) -> None:
        self.result = result
        total = len(result.written) + len(result.failed)
        names = ", ".join(path.name for path in result.failed)
        super().__init__(
            f"{len(result.failed)} of {total} volumes failed ({names}); the other "
            f"{len(result.written)} were written to {out_dir}"
        )


def volume_files(folder: Path) -> list[Path]:
    """NIfTI and TIFF files directly inside ``folder``, sorted by name (hidden files skipped).

    Raises:
        DataError: ``folder`` is not a folder or holds no volume file.
    """
    if not folder.is_dir():
        raise DataError(folder, "missing-file", "folder does not exist")
    suffixes = (*NIFTI_SUFFIXES, *TIFF_SUFFIXES)
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(suffixes)
    )
    if not files:
        raise DataError(
            folder, "no-volumes", "no .nii, .nii.gz, .tif, .tiff or .ome.tif file in this folder"
        )
    return files


def predict_folder(
    predictor: Predictor,
    folder: str | Path,
    out_dir: str | Path,
    *,
    probabilities: bool = False,
    progress: Progress | None = None,
) -> FolderResult:
    """Predict every volume in ``folder`` (not recursive) into ``out_dir``.

    A file that fails with a user error (unreadable, not 3D, NaN voxels, ...) is recorded and
    skipped; the files before and after it are still written.

    Args:
        predictor: The model.
        folder: Folder of ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.ome.tif`` volumes.
        out_dir: Output folder (see :meth:`Predictor.predict_file` for the names).
        probabilities: Also write the probability maps.
        progress: Called after each file.

    Returns:
        What was written and what failed; check :attr:`FolderResult.ok`.

    Raises:
        DataError: ``folder`` is missing or holds no volume file.
    """
    files = volume_files(Path(folder))
    result = FolderResult()
    for done, path in enumerate(files, start=1):
        try:
            result.written[path] = predictor.predict_file(
                path, out_dir, probabilities=probabilities
            )
        except MinivessError as exc:
            result.failed[path] = str(exc)
        if progress is not None:
            progress(done, len(files), path)
    return result
