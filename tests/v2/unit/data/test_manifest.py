"""The manifest schema: a damaged manifest names the row, column and rule, never a traceback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minivess.data.manifest import (
    MANIFEST_COLUMNS,
    InvalidDatasetError,
    ManifestModel,
    dataset_version,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from minivess.errors import DataError


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _row(case_id: str) -> dict[str, object]:
    return {
        "id": case_id,
        "source": "decathlon",
        "image": f"images/{case_id}.nii.gz",
        "label": f"labels/{case_id}.nii.gz",
        "original_image": f"imagesTr/{case_id}.nii.gz",
        "original_label": f"labelsTr/{case_id}.nii.gz",
        "shape_h": 512,
        "shape_w": 512,
        "shape_d": 15,
        "spacing_h": float(np.float32(0.994)),
        "spacing_w": float(np.float32(0.994)),
        "spacing_d": 5.0,
        "dtype": "uint8",
        "intensity_min": 0.0,
        "intensity_p1": 4.0,
        "intensity_p50": 13.0,
        "intensity_p99": 83.0,
        "intensity_max": 255.0,
        "intensity_mean": 19.781628131866455,
        "intensity_std": 17.66802508241,
        "vessel_fraction": 0.12367706298828125,
        "image_sha256": _sha("image" + case_id),
        "label_sha256": _sha("label" + case_id),
        "spacing_source": "metadata",
    }


def _manifest(*ids: str) -> pd.DataFrame:
    return pd.DataFrame([_row(i) for i in ids or ("a", "b")], columns=MANIFEST_COLUMNS)


def test_columns_are_the_documented_contract() -> None:
    assert MANIFEST_COLUMNS == [
        "id", "source", "image", "label", "original_image", "original_label",
        "shape_h", "shape_w", "shape_d", "spacing_h", "spacing_w", "spacing_d", "dtype",
        "intensity_min", "intensity_p1", "intensity_p50", "intensity_p99", "intensity_max",
        "intensity_mean", "intensity_std", "vessel_fraction", "image_sha256", "label_sha256",
        "spacing_source",
    ]  # fmt: skip
    assert list(ManifestModel.to_schema().columns) == MANIFEST_COLUMNS


def test_write_then_read_round_trips_exactly(tmp_path: Path) -> None:
    df = validate_manifest(_manifest("001", "NA", "mv01"))
    path = write_manifest(df, tmp_path / "manifest.csv")
    back = read_manifest(path)
    assert back["id"].tolist() == ["001", "NA", "mv01"]  # ids stay text
    pd.testing.assert_frame_equal(back, df)
    assert back.at[0, "spacing_h"] == float(np.float32(0.994))


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("vessel_fraction", 0.0, "label-binary"),
        ("vessel_fraction", 1.5, "label-binary"),
        ("spacing_d", 0.0, "spacing"),
        ("spacing_h", np.inf, "spacing"),
        ("intensity_mean", np.nan, "non-finite"),
        ("intensity_p1", -1.0, "intensity-stats"),
        ("shape_d", 0, "dimensionality"),
        ("id", "a/b", "invalid-id"),
        ("id", "a", "duplicate-id"),
        ("image", "images/other.nii.gz", "file-path"),
        ("label_sha256", "not-a-hash", "manifest-schema"),
    ],
)
def test_each_broken_rule_names_row_column_and_rule(column: str, value: object, rule: str) -> None:
    df = _manifest("a", "b")
    df[column] = df[column].astype(object)
    df.at[1, column] = value
    with pytest.raises(InvalidDatasetError) as err:
        validate_manifest(df, "ds/manifest.csv")
    assert rule in {p.rule for p in err.value.problems}
    message = str(err.value)
    assert message.startswith("ds/manifest.csv: [invalid-dataset]")
    assert f"[{rule}]" in message
    assert "row 1" in message


def test_every_problem_is_listed_once() -> None:
    df = _manifest("a", "b", "c")
    df.loc[0, "spacing_d"] = 0.0
    df.loc[2, "vessel_fraction"] = 0.0
    df.loc[2, "intensity_min"] = 300.0
    with pytest.raises(InvalidDatasetError) as err:
        validate_manifest(df)
    found = sorted((p.rule, p.message.split(":")[0]) for p in err.value.problems)
    assert found == [
        ("intensity-stats", "row 2 (id 'c')"),
        ("label-binary", "row 2 (id 'c')"),
        ("spacing", "row 0 (id 'a')"),
    ]


def test_missing_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    _manifest().drop(columns=["vessel_fraction"]).to_csv(path, index=False)
    with pytest.raises(InvalidDatasetError) as err:
        read_manifest(path)
    assert "vessel_fraction" in str(err.value)
    assert {p.rule for p in err.value.problems} == {"manifest-columns"}


def test_text_in_a_number_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    df = _manifest()
    df["shape_h"] = df["shape_h"].astype(object)
    df.at[0, "shape_h"] = "wide"
    df.to_csv(path, index=False)
    with pytest.raises(InvalidDatasetError) as err:
        read_manifest(path)
    assert "shape_h" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "rule"), [(None, "missing-file"), (b"\xff\xfe\x00garbage", "corrupt-file")]
)
def test_unreadable_manifest_file(tmp_path: Path, content: bytes | None, rule: str) -> None:
    path = tmp_path / "manifest.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert err.value.rule == rule
    assert str(path) in str(err.value)


def test_version_is_a_hash_of_named_file_contents() -> None:
    df = _manifest("a", "b")
    version = dataset_version(df)
    assert len(version) == 64
    assert dataset_version(df.iloc[::-1]) == version  # row order does not matter
    swapped = df.copy()
    swapped["label_sha256"] = df["label_sha256"].tolist()[::-1]
    assert dataset_version(swapped) != version  # which file has which content matters
    changed = df.copy()
    changed.at[0, "image_sha256"] = _sha("edited")
    assert dataset_version(changed) != version
    relocated = df.copy()
    relocated["original_image"] = "/elsewhere/" + df["original_image"]
    assert dataset_version(relocated) == version
