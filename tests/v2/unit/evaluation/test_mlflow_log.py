"""Evaluation results logged to an MLflow run: files as artifacts, test_* summary metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minivess.adapters import build_adapter
from minivess.errors import MinivessError
from minivess.evaluation import METRICS, EvaluationResult, evaluate
from minivess.inference import Predictor

from .conftest import PREDICTION_EXTRA, TINY_SEGRESNET


@pytest.fixture(scope="module")
def result(real_cases: list, tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "best.pt"
    build_adapter("segresnet", TINY_SEGRESNET).save_checkpoint(path, extra=PREDICTION_EXTRA)
    return evaluate(Predictor.from_source(path), real_cases, n_boot=500)


def artifact_names(client, run_id: str, path: str = "") -> set[str]:
    names = set()
    for entry in client.list_artifacts(run_id, path or None):
        names |= artifact_names(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return names


def expected_artifacts(result: EvaluationResult) -> set[str]:
    overlays = {f"evaluation/figures/overlays/{i}.png" for i in result.per_volume["id"]}
    return {
        "evaluation/per_volume.csv",
        "evaluation/summary.json",
        "evaluation/figures/metrics.png",
        *overlays,
    }


@pytest.mark.slow
def test_active_run_and_named_run_receive_files_and_metrics(
    tracking: str, result: EvaluationResult, tmp_path: Path
) -> None:
    import mlflow

    from minivess.tracking.setup import ensure_experiment

    experiment = ensure_experiment("evaluation-tests")
    with mlflow.start_run(experiment_id=experiment) as active:
        result.save(tmp_path / "active")
    with mlflow.start_run(experiment_id=experiment) as finished:
        pass
    result.save(tmp_path / "named", run_id=finished.info.run_id)

    client = mlflow.MlflowClient()
    for run_id in (active.info.run_id, finished.info.run_id):
        metrics = client.get_run(run_id).data.metrics
        for name in METRICS:
            assert metrics[f"test_{name}_mean"] == pytest.approx(result.summary[name].mean)
            assert metrics[f"test_{name}_ci_low"] == pytest.approx(result.summary[name].ci_low)
            assert metrics[f"test_{name}_ci_high"] == pytest.approx(result.summary[name].ci_high)
        assert artifact_names(client, run_id) == expected_artifacts(result)


def test_without_a_run_nothing_is_logged(result: EvaluationResult, tmp_path: Path) -> None:
    import sys

    mlflow = sys.modules.get("mlflow")
    assert mlflow is None or mlflow.active_run() is None
    files = result.save(tmp_path / "plain")
    assert (tmp_path / "plain" / "summary.json") in files


@pytest.mark.slow
def test_unknown_run_id_is_a_user_error(
    tracking: str, result: EvaluationResult, tmp_path: Path
) -> None:
    with pytest.raises(MinivessError, match="no MLflow run 'deadbeef'"):
        result.save(tmp_path / "x", run_id="deadbeef")
    assert not (tmp_path / "x").exists()
