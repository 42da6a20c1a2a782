"""The manifest of a prepared dataset: one validated row per volume, and its content version.

``manifest.csv`` is the contract between ``prepare`` and everything downstream (splits,
training, drift monitoring). :class:`ManifestModel` is its pandera schema and the last guard
before a prepared dataset is published; :func:`read_manifest` applies it again on every read,
so a hand-edited or damaged manifest fails with a :class:`~minivess.errors.DataError` naming
the row, column and rule instead of surfacing later as a shape error inside training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from minivess.errors import DataError

#: Case ids become file names, so they are restricted to portable file-name characters.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SHA256_PATTERN = r"^[0-9a-f]{64}$"


class InvalidDatasetError(DataError):
    """Several data problems found in one pass, reported together.

    Args:
        path: The dataset folder or file the problems were found in.
        problems: One :class:`DataError` per offending file and rule.
        summary: First line of the message, before the list of problems.
    """

    def __init__(
        self, path: str | Path | None, problems: Sequence[DataError], summary: str
    ) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(path, "invalid-dataset", f"{summary}\n{listing}")


class ManifestModel(pa.DataFrameModel):
    """Schema of ``manifest.csv``: one row per volume of a prepared dataset.

    Shapes and spacings are in (H, W, D) order (the NIfTI voxel order); spacings are in
    micrometres exactly as stored in the float32 NIfTI header; intensities describe the image
    voxels; ``vessel_fraction`` is the fraction of label voxels equal to 1, so a value in
    (0, 1] records that the label was binary and not empty.
    """

    id: Series[str] = pa.Field(unique=True, str_matches=ID_PATTERN)
    source: Series[str]
    image: Series[str]
    label: Series[str]
    original_image: Series[str]
    original_label: Series[str]
    shape_h: Series[int] = pa.Field(ge=1)
    shape_w: Series[int] = pa.Field(ge=1)
    shape_d: Series[int] = pa.Field(ge=1)
    spacing_h: Series[float]
    spacing_w: Series[float]
    spacing_d: Series[float]
    dtype: Series[str]
    intensity_min: Series[float]
    intensity_p1: Series[float]
    intensity_p50: Series[float]
    intensity_p99: Series[float]
    intensity_max: Series[float]
    intensity_mean: Series[float]
    intensity_std: Series[float] = pa.Field(ge=0)
    vessel_fraction: Series[float] = pa.Field(gt=0, le=1)
    image_sha256: Series[str] = pa.Field(str_matches=_SHA256_PATTERN)
    label_sha256: Series[str] = pa.Field(str_matches=_SHA256_PATTERN)
    spacing_source: Series[str]

    @pa.check("^spacing_[hwd]$", regex=True)
    @classmethod
    def positive_finite(cls, spacing: pd.Series) -> pd.Series:
        """Voxel sizes must be positive and finite (zero breaks resampling and metrics)."""
        return spacing.gt(0) & pd.Series(np.isfinite(spacing), index=spacing.index)

    @pa.check("^intensity_", regex=True)
    @classmethod
    def finite(cls, values: pd.Series) -> pd.Series:
        """Intensity statistics must be finite: NaN/Inf poison normalisation."""
        return pd.Series(np.isfinite(values), index=values.index)

    @pa.dataframe_check
    @classmethod
    def intensity_order(cls, df: pd.DataFrame) -> pd.Series:
        """Intensities are ordered min <= p1 <= p50 <= p99 <= max, as for any set of voxels."""
        cols = ["intensity_min", "intensity_p1", "intensity_p50", "intensity_p99"]
        nxt = [*cols[1:], "intensity_max"]
        ordered = np.all(df[cols].to_numpy() <= df[nxt].to_numpy(), axis=1)
        return pd.Series(ordered, index=df.index)

    @pa.dataframe_check
    @classmethod
    def file_paths(cls, df: pd.DataFrame) -> pd.Series:
        """Files live at ``images/<id>.nii.gz`` and ``labels/<id>.nii.gz``."""
        return (df["image"] == "images/" + df["id"] + ".nii.gz") & (
            df["label"] == "labels/" + df["id"] + ".nii.gz"
        )

    class Config:
        """Exactly these columns, in this order; CSV text is coerced to the declared types."""

        strict = True
        ordered = True
        coerce = True


MANIFEST_SCHEMA = ManifestModel.to_schema()
MANIFEST_COLUMNS: list[str] = list(MANIFEST_SCHEMA.columns)
_STRING_COLUMNS = [
    name
    for name, col in MANIFEST_SCHEMA.columns.items()
    if not pd.api.types.is_numeric_dtype(col.dtype.type)
]

#: Rule names shared with the per-volume checks of ``prepare``, by column.
_RULE_BY_COLUMN = {
    "id": "invalid-id",
    "vessel_fraction": "label-binary",
    "spacing_h": "spacing",
    "spacing_w": "spacing",
    "spacing_d": "spacing",
    "shape_h": "dimensionality",
    "shape_w": "dimensionality",
    "shape_d": "dimensionality",
}


def _rule_for(column: str, check: str) -> str:
    """The rule name a failed schema check reports, matching the per-volume rules of prepare."""
    if check.startswith(("column_in", "dtype(", "coerce_dtype", "column_ordered")):
        return "manifest-columns"
    frame_rules = {
        "field_uniqueness": "duplicate-id",
        "file_paths": "file-path",
        "intensity_order": "intensity-stats",
    }
    if check in frame_rules:
        return frame_rules[check]
    if column.startswith("intensity_"):
        return "non-finite" if check in {"finite", "not_nullable"} else "intensity-stats"
    return _RULE_BY_COLUMN.get(column, "manifest-schema")


#: What a row-wide check requires, for messages (it has no single column to name).
_ROW_CHECKS = {
    "intensity_order": "intensity statistics must satisfy min <= p1 <= p50 <= p99 <= max",
    "file_paths": "image and label must be images/<id>.nii.gz and labels/<id>.nii.gz",
}


def _describe(column: str, check: str, value: object) -> str:
    if check in _ROW_CHECKS:
        return _ROW_CHECKS[check]
    if check == "column_in_dataframe":
        return f"missing column {value!r}"
    return f"column {column!r} fails {check} (value {value!r})"


def _schema_problems(
    df: pd.DataFrame, failures: pd.DataFrame, path: Path | None
) -> list[DataError]:
    """One DataError per failing (row, check), naming the row's id, the column and the check."""
    found: dict[tuple[str, str, str], DataError] = {}
    for fail in failures.to_dict("records"):
        column, check, index = str(fail["column"]), str(fail["check"]), fail["index"]
        where, order = "the table", ""
        if index is not None and not pd.isna(index) and index in df.index and "id" in df:
            where, order = f"row {index} (id {df.at[index, 'id']!r})", f"{int(index):09d}"
        # A row-wide check is listed once per column of the row: keep one.
        key = (order, check if check in _ROW_CHECKS else column, check)
        message = f"{where}: {_describe(column, check, fail['failure_case'])}"
        found.setdefault(key, DataError(path, _rule_for(column, check), message))
    return [found[key] for key in sorted(found)]


def validate_manifest(df: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Validate a manifest table against :class:`ManifestModel`.

    Args:
        df: The manifest, one row per volume.
        path: File or folder named in the error message.

    Returns:
        The table with columns coerced to the schema's types.

    Raises:
        InvalidDatasetError: Listing every failing row, column and rule.
    """
    where = Path(path) if path is not None else None
    try:
        return MANIFEST_SCHEMA.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        problems = _schema_problems(df, exc.failure_cases, where)
        raise InvalidDatasetError(
            where, problems, f"{len(problems)} problem(s) in the manifest"
        ) from None


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``manifest.csv``.

    Args:
        path: The manifest file (``<prepared>/manifest.csv``).

    Returns:
        The validated table, one row per volume, in file order.

    Raises:
        DataError: The file is missing or not CSV (``missing-file``, ``corrupt-file``).
        InvalidDatasetError: A row or column breaks the schema.

    Example:
        >>> df = read_manifest("data/prepared/vesselnn/manifest.csv")  # doctest: +SKIP
        >>> df[["id", "shape_d", "vessel_fraction"]]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing-file", "manifest not found; run `minivess prepare` first")
    try:
        # Ids such as "001" or "NA" must stay text; floats must round-trip exactly.
        df = pd.read_csv(
            path,
            dtype=dict.fromkeys(_STRING_COLUMNS, str),
            keep_default_na=False,
            float_precision="round_trip",
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(path, "corrupt-file", f"cannot read manifest CSV ({exc})") from exc
    return validate_manifest(df, path)


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a validated manifest as CSV (floats in shortest round-trip form)."""
    path = Path(path)
    df.to_csv(path, index=False, lineterminator="\n")
    return path


def dataset_version(manifest: pd.DataFrame) -> str:
    """Content hash of a prepared dataset.

    The sha256 of the ``sha256sum``-style listing (``"<sha256>  <relative path>"`` per line,
    sorted by path) of every image and label file. Names are part of the hash, so swapping
    two labels changes the version; where the dataset sits on disk does not.

    Args:
        manifest: A manifest with ``image``, ``label``, ``image_sha256``, ``label_sha256``.

    Returns:
        64 lowercase hex digits.
    """
    entries = sorted(
        [
            *zip(manifest["image"], manifest["image_sha256"], strict=True),
            *zip(manifest["label"], manifest["label_sha256"], strict=True),
        ]
    )
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in entries)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
