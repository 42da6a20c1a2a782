"""``prepare``: any supported source folder -> one canonical, validated dataset folder.

The output is the only layout the rest of minivess reads::

    <out>/images/<id>.nii.gz   image voxels and dtype exactly as loaded, geometry kept
    <out>/labels/<id>.nii.gz   uint8 {0, 1}, with the image's geometry
    <out>/manifest.csv         one row per volume (see :mod:`minivess.data.manifest`)
    <out>/dataset.json         name, source, version (content hash), creating version

Every volume is checked before it is written and every problem is collected, so one run
reports all of them at once. The folder is built beside ``out`` and renamed into place, so
a failure or an interrupt leaves either the previous ``out`` or nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import minivess
from minivess.data.io import write_nifti
from minivess.data.manifest import (
    ID_PATTERN,
    MANIFEST_COLUMNS,
    InvalidDatasetError,
    dataset_version,
    file_sha256,
    validate_manifest,
    write_manifest,
)
from minivess.data.sources import Case, DatasetSource, detect_source, get_source
from minivess.data.volume import Volume
from minivess.errors import DataError

#: ``progress(done, total, case_id)`` is called after each volume.
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset folder.

    Args:
        out: The folder.
        manifest: Its validated manifest, one row per volume.
        version: Content hash of its images and labels (also in ``dataset.json``).
    """

    out: Path
    manifest: pd.DataFrame
    version: str


def prepare_dataset(
    root: str | Path,
    out: str | Path,
    *,
    source: str | DatasetSource | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> PreparedDataset:
    """Convert the dataset at ``root`` into the canonical prepared layout at ``out``.

    Args:
        root: Folder (or archive) in a layout some registered source understands.
        out: Destination folder; its name becomes the dataset ``name`` in ``dataset.json``.
        source: Registered source name, a source instance, or ``None`` to detect the layout.
        overwrite: Replace an existing ``out`` (atomically: the old folder is removed only
            once the new one is in place).
        progress: Called as ``progress(done, total, case_id)`` after each volume.

    Returns:
        The prepared dataset.

    Raises:
        DataError: Unknown layout, ``out`` exists without ``overwrite``, or ``out`` would
            replace the source folder.
        InvalidDatasetError: One or more volumes break a rule; every problem is listed.

    Example:
        >>> ds = prepare_dataset("vesselnn", "prepared/vesselnn")  # doctest: +SKIP
        >>> len(ds.manifest), len(ds.version)  # doctest: +SKIP
        (6, 64)
    """
    root, out = Path(root), Path(out)
    _check_output(root, out, overwrite)
    src = _resolve_source(root, source)
    cases = src.discover(root)
    if not cases:
        raise DataError(root, "empty-dataset", f"no volumes found by the {src.name} source")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        manifest = _stage_cases(src, cases, root, staging, progress)
        version = dataset_version(manifest)
        _write_dataset_json(staging, out.name, src.name, root, len(manifest), version)
        _publish(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PreparedDataset(out=out, manifest=manifest, version=version)


def _resolve_source(root: Path, source: str | DatasetSource | None) -> DatasetSource:
    if source is None:
        return detect_source(root)
    if isinstance(source, DatasetSource):
        return source
    if not root.exists():
        raise DataError(root, "missing-folder", "dataset folder does not exist")
    return get_source(source)


def _check_output(root: Path, out: Path, overwrite: bool) -> None:
    """Refuse outputs that would clobber data: an existing ``out``, or the source itself."""
    root_r, out_r = root.resolve(), out.resolve()
    if root_r == out_r or root_r.is_relative_to(out_r):
        raise DataError(
            out, "output-path", f"output must not be or contain the dataset folder {root}"
        )
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise DataError(
            out,
            "output-exists",
            "output folder already exists; pass --overwrite (overwrite=True) to replace it",
        )


def _stage_cases(
    src: DatasetSource,
    cases: list[Case],
    root: Path,
    staging: Path,
    progress: ProgressCallback | None,
) -> pd.DataFrame:
    """Check every case, write the valid ones into ``staging``, and build the manifest.

    Writing stops at the first problem (the output will be discarded) but checking goes on,
    so the error lists every bad volume, not just the first.
    """
    problems = _id_problems(cases)
    rows: list[dict[str, Any]] = []
    (staging / "images").mkdir()
    (staging / "labels").mkdir()
    for done, case in enumerate(cases, start=1):
        found, pair = _load_checked(src, case, root)
        problems.extend(found)
        if pair is not None and not problems:
            rows.append(_write_case(case, *pair, root, staging))
        if progress is not None:
            progress(done, len(cases), case.case_id)
    if problems:
        raise InvalidDatasetError(
            root, problems, f"{len(problems)} problem(s) found; nothing was written"
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("id", ignore_index=True)
    manifest = validate_manifest(manifest, root)
    write_manifest(manifest, staging / "manifest.csv")
    return manifest


def _load_checked(
    src: DatasetSource, case: Case, root: Path
) -> tuple[list[DataError], tuple[Volume, Volume] | None]:
    """Load one case and check it: its problems, and the pair when there are none."""
    problems = _outside_root(case, root)
    if problems:
        return problems, None
    try:
        image, label = src.load(case)
    except DataError as exc:
        return [exc], None
    problems = volume_problems(case, image, label)
    if problems or label is None:
        return problems, None
    return [], (image, label)


def _id_problems(cases: list[Case]) -> list[DataError]:
    """Ids become file names: each must be unique and made of portable characters."""
    counts = Counter(case.case_id for case in cases)
    problems = []
    for case in cases:
        if counts[case.case_id] > 1:
            problems.append(
                DataError(
                    case.image,
                    "duplicate-id",
                    f"id {case.case_id!r} is used by {counts[case.case_id]} volumes; "
                    "rename one so every volume has its own id",
                )
            )
        if not re.fullmatch(ID_PATTERN, case.case_id):
            problems.append(
                DataError(
                    case.image,
                    "invalid-id",
                    f"id {case.case_id!r} is not a portable file name "
                    "(use letters, digits, '.', '_' and '-')",
                )
            )
    return problems


def _outside_root(case: Case, root: Path) -> list[DataError]:
    """Files a case points to must lie inside ``root`` once symlinks are resolved."""
    root_r = root.resolve()
    problems = []
    for location in (case.image, case.label):
        if location is None:
            continue
        file_part = Path(location.split("!", 1)[0])  # "archive.zip!member" -> the archive
        if not file_part.resolve().is_relative_to(root_r):
            problems.append(
                DataError(
                    location,
                    "outside-root",
                    f"resolves to {file_part.resolve()}, outside the dataset folder {root}; "
                    "copy the file into the dataset instead of linking to it",
                )
            )
    return problems


def volume_problems(case: Case, image: Volume, label: Volume | None) -> list[DataError]:
    """Every rule a loaded image/label pair breaks (empty list when it is usable).

    Rules: ``dimensionality`` (3D), ``label-missing``, ``shape-mismatch``, ``spacing``
    (positive, finite), ``non-finite`` (NaN/Inf in a float image), ``label-binary``
    (values in {0, 1}) and ``label-empty`` (at least one vessel voxel).

    Args:
        case: The case, for the file names in messages.
        image: The loaded image.
        label: The loaded label, after the source's conversion.
    """
    label_file = case.label or case.image
    for vol, where in ((image, case.image), (label, label_file)):
        if vol is not None and vol.array.ndim != 3:
            return [DataError(where, "dimensionality", f"expected 3D, got shape {vol.array.shape}")]
    if label is None:
        return [DataError(case.image, "label-missing", "no label found for this image")]
    if image.shape != label.shape:
        msg = f"image shape {image.shape} differs from label shape {label.shape} ({case.label})"
        return [DataError(case.image, "shape-mismatch", msg)]
    problems = []
    spacing = image.spacing
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        problems.append(
            DataError(case.image, "spacing", f"voxel spacing must be positive, got {spacing}")
        )
    if np.issubdtype(image.array.dtype, np.floating) and not np.isfinite(image.array).all():
        n_bad = int(np.count_nonzero(~np.isfinite(image.array)))
        problems.append(
            DataError(case.image, "non-finite", f"{n_bad} voxel(s) are NaN or infinite")
        )
    problems.extend(_label_problems(label.array, label_file))
    return problems


def _label_problems(array: np.ndarray, where: str) -> list[DataError]:
    is_binary = (array == 0) | (array == 1)
    if not is_binary.all():
        bad = np.unique(array[~is_binary])[:5].tolist()
        msg = f"label must contain only 0 and 1, found {bad}; convert it to a binary mask"
        return [DataError(where, "label-binary", msg)]
    if not array.any():
        return [DataError(where, "label-empty", "label has no vessel voxels")]
    return []


def _relative_location(location: str, root: Path) -> str:
    """A case's file as the user knows it: relative to the dataset folder where possible."""
    try:
        return str(Path(location).relative_to(root))
    except ValueError:
        return location


def _intensity_stats(array: np.ndarray) -> dict[str, float]:
    p1, p50, p99 = np.percentile(array, [1, 50, 99])
    return {
        "intensity_min": float(array.min()),
        "intensity_p1": float(p1),
        "intensity_p50": float(p50),
        "intensity_p99": float(p99),
        "intensity_max": float(array.max()),
        "intensity_mean": float(array.mean(dtype=np.float64)),
        "intensity_std": float(array.std(dtype=np.float64)),
    }


def _write_case(
    case: Case, image: Volume, label: Volume, root: Path, staging: Path
) -> dict[str, Any]:
    """Write one validated pair (label with the image's geometry) and return its manifest row."""
    image_rel, label_rel = f"images/{case.case_id}.nii.gz", f"labels/{case.case_id}.nii.gz"
    write_nifti(staging / image_rel, image.array, like=image)
    write_nifti(staging / label_rel, label.array, like=image, dtype=np.uint8)
    # The NIfTI header stores spacing as float32; record what readers will get back.
    spacing = [float(np.float32(s)) for s in image.spacing]
    return {
        "id": case.case_id,
        "source": case.source,
        "image": image_rel,
        "label": label_rel,
        "original_image": _relative_location(case.image, root),
        "original_label": _relative_location(case.label or "", root),
        "shape_h": image.shape[0],
        "shape_w": image.shape[1],
        "shape_d": image.shape[2],
        "spacing_h": spacing[0],
        "spacing_w": spacing[1],
        "spacing_d": spacing[2],
        "dtype": image.array.dtype.name,
        **_intensity_stats(image.array),
        "vessel_fraction": float(np.count_nonzero(label.array)) / label.array.size,
        "image_sha256": file_sha256(staging / image_rel),
        "label_sha256": file_sha256(staging / label_rel),
        "spacing_source": str(
            case.meta.get("spacing_source") or image.meta.get("spacing_source") or "header"
        ),
    }


def _write_dataset_json(
    staging: Path, name: str, source: str, root: Path, n_volumes: int, version: str
) -> None:
    info = {
        "name": name,
        "source": source,
        "source_root": str(root.resolve()),
        "n_volumes": n_volumes,
        "version": version,
        "created_by": f"minivess {minivess.__version__}",
    }
    (staging / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out``; an old ``out`` is moved aside first and deleted last."""
    if not (out.exists() or out.is_symlink()):
        os.rename(staging, out)
        return
    if not overwrite:  # appeared while we were working
        raise DataError(out, "output-exists", "output folder appeared during prepare; not replaced")
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        os.rename(out, aside / "old")
        try:
            os.rename(staging, out)
        except BaseException:
            os.rename(aside / "old", out)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
