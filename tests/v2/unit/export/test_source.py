"""Exporting model sources and filing the ONNX file with the model's MLflow training run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from minivess.errors import MinivessError
from minivess.export import load_onnx
from minivess.export.source import ExportedModel, export_source, log_export
from minivess.tracking import log_model
from minivess.tracking.setup import import_mlflow

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel


def test_export_source_copies_the_cached_graph(onnx_model: OnnxModel, tmp_path: Path) -> None:
    exported = export_source(
        onnx_model.checkpoint, tmp_path / "m.onnx", cache_dir=onnx_model.cache_dir
    )
    assert exported.path.read_bytes() == onnx_model.onnx.read_bytes()
    assert exported.metadata == load_onnx(onnx_model.onnx)[1]
    assert exported.metadata.training_run_id is None


def test_export_is_logged_to_its_training_run(
    tracking: str, onnx_model: OnnxModel, tmp_path: Path
) -> None:
    mlflow = import_mlflow()
    with mlflow.start_run() as run:
        pass
    _, meta = load_onnx(onnx_model.onnx)
    exported = ExportedModel(
        onnx_model.onnx, meta.model_copy(update={"training_run_id": run.info.run_id}), "best.pt"
    )
    assert log_export(exported) == f"onnx/{onnx_model.onnx.name}"
    logged = mlflow.MlflowClient().list_artifacts(run.info.run_id, "onnx")
    assert [a.path for a in logged] == [f"onnx/{onnx_model.onnx.name}"]
    with pytest.raises(MinivessError, match="no MLflow run 'missing'"):
        log_export(
            replace(exported, metadata=meta.model_copy(update={"training_run_id": "missing"}))
        )
    with pytest.raises(MinivessError, match="records no training run"):
        log_export(replace(exported, metadata=meta))


@pytest.mark.slow
def test_an_mlflow_model_exports_with_the_run_that_logged_it(
    tracking: str, onnx_model: OnnxModel, tmp_path: Path
) -> None:
    mlflow = import_mlflow()
    with mlflow.start_run() as run:
        log_model(onnx_model.checkpoint)
    exported = export_source(
        f"runs:/{run.info.run_id}/model", tmp_path / "m.onnx", cache_dir=tmp_path / "cache"
    )
    assert exported.metadata.training_run_id == run.info.run_id
    log_export(exported)
    logged = mlflow.MlflowClient().list_artifacts(run.info.run_id, "onnx")
    assert [a.path for a in logged] == ["onnx/m.onnx"]
