"""evaluate_prepared(): the right volumes of a prepared dataset, recorded with the result."""

from __future__ import annotations

from pathlib import Path

import pytest

from minivess.data.splits import load_splits
from minivess.errors import ConfigError, DataError
from minivess.evaluation import evaluate_prepared
from minivess.evaluation.prepared import select_ids
from minivess.inference import Predictor


@pytest.fixture
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_source(checkpoint)


def test_val_train_and_all_select_the_splits_volumes(prepared_synthetic, predictor) -> None:
    dataset = prepared_synthetic.out
    fold = load_splits(dataset / "splits.json").folds[1]
    val = evaluate_prepared(predictor, dataset, fold=1, n_boot=200)
    assert list(val.per_volume["id"]) == list(fold.val)
    assert val.data["dataset_version"] == prepared_synthetic.version
    assert val.data["subset"] == "val"
    assert val.data["fold"] == 1
    assert val.data["splits_file"] == str(dataset / "splits.json")
    manifest = prepared_synthetic.manifest
    train = select_ids(dataset, manifest, splits_file=None, fold=1, subset="train")
    assert train == list(fold.train)
    everything = select_ids(dataset, manifest, splits_file=None, fold=None, subset="all")
    assert everything == list(manifest["id"])


def test_model_source_path_is_loaded(prepared_synthetic, checkpoint: Path) -> None:
    done: list[str] = []
    result = evaluate_prepared(
        checkpoint,
        prepared_synthetic.out,
        fold=0,
        splits_file=prepared_synthetic.out / "splits.json",
        n_boot=200,
        progress=lambda n, case_id: done.append(case_id),
    )
    assert done == list(result.per_volume["id"])
    assert result.model["source"] == str(checkpoint)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "--fold"),
        ({"fold": 5}, "folds 0..1"),
        ({"fold": 0, "subset": "all"}, "drop it"),
        ({"fold": 0, "subset": "test"}, "val, train, all"),
    ],
)
def test_invalid_selections_are_config_errors(
    prepared_synthetic, predictor, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        evaluate_prepared(predictor, prepared_synthetic.out, **kwargs)


def test_missing_dataset_or_splits_are_data_errors(prepared_synthetic, predictor, tmp_path) -> None:
    with pytest.raises(DataError, match="manifest"):
        evaluate_prepared(predictor, tmp_path, fold=0)
    with pytest.raises(DataError, match="splits file does not exist"):
        evaluate_prepared(
            predictor, prepared_synthetic.out, fold=0, splits_file=tmp_path / "x.json"
        )
