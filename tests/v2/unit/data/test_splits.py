"""k-fold splits: deterministic, a true partition by volume, and checked against the dataset."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivess.data.prepare import prepare_dataset
from minivess.data.sources.vesselnn import MissingMetadataWarning, VesselNNSource
from minivess.data.splits import (
    Splits,
    load_splits,
    make_splits,
    save_splits,
    splits_for_prepared,
)
from minivess.data.synthetic import write_synthetic_dataset
from minivess.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[4]
VESSELNN_SPLITS = REPO_ROOT / "configs" / "splits" / "vesselnn.json"
IDS = [f"mv{i:02d}" for i in range(1, 12)]


def _assert_partition(splits: Splits, ids: list[str]) -> None:
    vals = [i for fold in splits.folds for i in fold.val]
    assert sorted(vals) == sorted(ids)  # every id validates exactly once
    sizes = [len(fold.val) for fold in splits.folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in splits.folds:
        assert sorted(fold.train + fold.val) == sorted(ids)
        assert not set(fold.train) & set(fold.val)


@settings(max_examples=30, deadline=None)
@given(
    ids=st.sets(st.text("abcxyz019_", min_size=1, max_size=6), min_size=2, max_size=20),
    data=st.data(),
    seed=st.integers(0, 2**31),
)
def test_folds_partition_the_ids(ids: set[str], data: st.DataObject, seed: int) -> None:
    k = data.draw(st.integers(2, len(ids)))
    ordered = sorted(ids)
    shuffled = data.draw(st.permutations(ordered))
    splits = make_splits(shuffled, k, seed, "demo")
    _assert_partition(splits, ordered)
    assert [f.fold for f in splits.folds] == list(range(k))
    assert splits.ids == ordered
    assert make_splits(ordered, k, seed, "demo") == splits  # input order does not matter


def test_same_inputs_give_identical_files(tmp_path: Path) -> None:
    a = save_splits(make_splits(IDS, 3, 42, "demo"), tmp_path / "a.json")
    b = save_splits(make_splits(list(reversed(IDS)), 3, 42, "demo"), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()


def test_seed_changes_the_assignment() -> None:
    folds = {tuple(f.val for f in make_splits(IDS, 3, seed, "demo").folds) for seed in range(5)}
    assert len(folds) > 1


def test_file_format_is_the_documented_one(tmp_path: Path) -> None:
    splits = make_splits(["a", "b", "c", "d"], 2, 7, "demo", dataset_version="v" * 64)
    data = json.loads(save_splits(splits, tmp_path / "s.json").read_text())
    assert list(data) == ["name", "seed", "k", "dataset_version", "folds"]
    assert (data["name"], data["seed"], data["k"], data["dataset_version"]) == (
        "demo",
        7,
        2,
        "v" * 64,
    )
    assert [list(f) for f in data["folds"]] == [["fold", "train", "val"]] * 2
    assert load_splits(tmp_path / "s.json") == splits


@pytest.mark.parametrize("k", [1, 5])
def test_k_out_of_range_is_a_config_error(k: int) -> None:
    with pytest.raises(ConfigError, match="k must be between 2 and the number of volumes"):
        make_splits(["a", "b", "c", "d"], k, 0, "demo")


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(DataError) as err:
        make_splits(["a", "b", "a"], 2, 0, "demo")
    assert err.value.rule == "duplicate-id"


def _manifest(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids})


def test_load_checks_ids_against_the_manifest(tmp_path: Path) -> None:
    path = save_splits(make_splits(IDS, 3, 0, "demo"), tmp_path / "s.json")
    assert load_splits(path, manifest=_manifest([*IDS, "extra"])).ids == IDS
    with pytest.raises(DataError) as err:
        load_splits(path, manifest=_manifest(IDS[1:]))
    assert err.value.rule == "unknown-id"
    assert str(path) in str(err.value)
    assert IDS[0] in str(err.value)


def _edit(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda d: d.pop("seed"), "splits-format"),
        (lambda d: d["folds"].pop(), "splits-format"),
        (lambda d: d["folds"][1]["val"].append(d["folds"][0]["val"][0]), "splits-partition"),
        (lambda d: d["folds"][0]["train"].pop(), "splits-partition"),
        (lambda d: d["folds"][0]["train"].append(d["folds"][0]["val"][0]), "splits-partition"),
    ],
)
def test_malformed_splits_file_is_refused(tmp_path: Path, change, rule: str) -> None:
    path = save_splits(make_splits(IDS, 3, 0, "demo"), tmp_path / "s.json")
    with pytest.raises(DataError) as err:
        load_splits(_edit(path, change))
    assert err.value.rule == rule
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("text", "rule"), [(None, "missing-file"), ("{not json", "splits-format")])
def test_unreadable_splits_file(tmp_path: Path, text: str | None, rule: str) -> None:
    path = tmp_path / "s.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError) as err:
        load_splits(path)
    assert err.value.rule == rule


def test_splits_for_a_prepared_dataset_carry_its_name_and_version(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_synthetic_dataset(root, n=4, shape=(16, 16, 4))
    ds = prepare_dataset(root, tmp_path / "synth")
    splits = splits_for_prepared(ds.out, k=2, seed=1)
    assert (splits.name, splits.dataset_version) == ("synth", ds.version)
    assert splits.ids == ds.manifest["id"].tolist()
    path = save_splits(splits, tmp_path / "s.json")
    assert load_splits(path, manifest=ds.out / "manifest.csv") == splits


def test_committed_vesselnn_splits_match_the_real_volumes(vesselnn_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        ids = [case.case_id for case in VesselNNSource().discover(vesselnn_dir)]
    assert len(ids) == 6
    committed = load_splits(VESSELNN_SPLITS, manifest=_manifest(ids))
    assert (committed.name, committed.k, committed.seed) == ("vesselnn", 3, 42)
    expected = make_splits(ids, 3, 42, "vesselnn", dataset_version=committed.dataset_version)
    assert committed == expected
    _assert_partition(committed, ids)
