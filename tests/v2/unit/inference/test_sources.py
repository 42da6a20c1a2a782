"""Model sources: checkpoint files, model folders and MLflow registry / run URIs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from minivess.adapters import CheckpointError, ModelAdapter
from minivess.errors import MinivessError
from minivess.inference import Predictor, is_mlflow_uri, load_source


def same_weights(a: ModelAdapter, b: ModelAdapter) -> bool:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_file_and_folder(checkpoint: Path, tiny_adapter: ModelAdapter) -> None:
    for source in (checkpoint, str(checkpoint), checkpoint.parent):
        adapter, info = load_source(source)
        assert same_weights(adapter, tiny_adapter)
        assert info.extra["inference"]["roi_size"] == [32, 32, 8]


def test_folder_must_hold_exactly_one_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as info:
        load_source(empty)
    assert info.value.rule == "missing"
    shutil.copyfile(checkpoint, checkpoint.parent / "last.pt")
    with pytest.raises(CheckpointError) as info:
        load_source(checkpoint.parent)
    assert info.value.rule == "ambiguous"
    assert "best.pt" in str(info.value)
    assert "last.pt" in str(info.value)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.from_source(tmp_path / "nope.pt")


def test_mlflow_uris_are_recognised() -> None:
    assert is_mlflow_uri("models:/minivess@champion")
    assert is_mlflow_uri("runs:/abc/model")
    assert not is_mlflow_uri("models/best.pt")
    assert not is_mlflow_uri(Path("models:/x"))


@pytest.mark.slow
def test_registry_alias_version_and_run_uris_load_the_logged_checkpoint(
    tracking: str, checkpoint: Path, tiny_adapter: ModelAdapter
) -> None:
    import mlflow

    from minivess.tracking.model import log_model
    from minivess.tracking.setup import ensure_experiment

    with mlflow.start_run(experiment_id=ensure_experiment("predict-tests")) as run:
        info = log_model(checkpoint, registered_model_name="vessels")
    mlflow.MlflowClient().set_registered_model_alias(
        "vessels", "champion", info.registered_model_version
    )
    uris = [
        "models:/vessels@champion",
        f"models:/vessels/{info.registered_model_version}",
        f"runs:/{run.info.run_id}/model",
    ]
    for uri in uris:
        predictor = Predictor.from_source(uri)
        assert same_weights(predictor.adapter, tiny_adapter), uri
        assert predictor.settings.inference.roi_size == (32, 32, 8)
        assert predictor.settings.preprocessing.percentiles == (1.0, 99.8)
        assert predictor.model.source == uri
    with pytest.raises(MinivessError, match="models:/vessels@nobody"):
        Predictor.from_source("models:/vessels@nobody")
