"""A tracked run: config, provenance and dataset at the start, the right status at the end."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from minivess.errors import ConfigError, MinivessError
from minivess.tracking import TrackedRun

CONFIG = {
    "name": "demo",
    "model": {"name": "segresnet", "params": {"init_filters": 8}},
    "data": {"patch_size": [32, 32, 8], "note": "n" * 900},
}


def _run(run_id: str):
    return mlflow.MlflowClient().get_run(run_id)


def test_run_logs_params_full_config_and_provenance(tracking: str, tmp_path: Path) -> None:
    with TrackedRun("exp", run_name="first", config=CONFIG, tags={"purpose": "test"}) as run:
        run.log_metrics({"val_dice": 0.5}, step=1)
    logged = _run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "first"
    assert logged.data.params["model.params.init_filters"] == "8"
    assert logged.data.params["data.patch_size"] == "[32, 32, 8]"
    assert logged.data.params["data.note"].endswith("...")
    assert logged.data.tags["purpose"] == "test"
    assert {"git_commit", "minivess_version", "torch_version", "cpu"} <= set(logged.data.tags)
    config_file = mlflow.artifacts.download_artifacts(
        run_id=run.run_id, artifact_path="config.yaml", dst_path=str(tmp_path)
    )
    assert yaml.safe_load(Path(config_file).read_text()) == CONFIG  # nothing truncated there


def test_dataset_is_an_mlflow_input_with_its_content_version(
    tracking: str, prepared_synthetic
) -> None:
    with TrackedRun("exp", dataset_dir=prepared_synthetic.out, log_system_metrics=False) as run:
        pass
    logged = _run(run.run_id)
    assert logged.data.tags["dataset_version"] == prepared_synthetic.version
    assert logged.data.tags["dataset"] == prepared_synthetic.out.name
    (dataset_input,) = logged.inputs.dataset_inputs
    assert dataset_input.dataset.name == prepared_synthetic.out.name
    assert prepared_synthetic.version.startswith(dataset_input.dataset.digest)
    assert json.loads(dataset_input.dataset.profile)["num_rows"] == len(prepared_synthetic.manifest)


def test_exception_marks_the_run_failed_and_propagates(tracking: str) -> None:
    with pytest.raises(RuntimeError, match="boom"), TrackedRun("exp") as run:
        raise RuntimeError("boom")
    assert _run(run.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_keyboard_interrupt_marks_the_run_killed(tracking: str) -> None:
    with pytest.raises(KeyboardInterrupt), TrackedRun("exp", log_system_metrics=False) as run:
        raise KeyboardInterrupt
    assert _run(run.run_id).info.status == "KILLED"


def test_resume_continues_the_same_run(tracking: str) -> None:
    with TrackedRun("exp", config=CONFIG, log_system_metrics=False) as first:
        first.log_metrics({"loss": 1.0}, step=1)
    with TrackedRun(resume_run_id=first.run_id, config=CONFIG, log_system_metrics=False) as again:
        again.log_metrics({"loss": 0.5}, step=2)
    assert again.run_id == first.run_id
    history = mlflow.MlflowClient().get_metric_history(first.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5)]
    assert _run(first.run_id).info.status == "FINISHED"


def test_resume_with_a_different_config_is_refused(tracking: str) -> None:
    with TrackedRun("exp", config=CONFIG, log_system_metrics=False) as first:
        pass
    changed = {**CONFIG, "model": {"name": "swinunetr", "params": {"init_filters": 8}}}
    with pytest.raises(ConfigError, match=r"model\.name: 'segresnet' -> 'swinunetr'"):
        TrackedRun(resume_run_id=first.run_id, config=changed).start()
    assert _run(first.run_id).info.status == "FINISHED"


def test_resume_of_an_unknown_run_names_it(tracking: str) -> None:
    with pytest.raises(MinivessError, match="no run 'deadbeef'"):
        TrackedRun(resume_run_id="deadbeef").start()


def test_system_metrics_are_sampled_while_the_run_is_open(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    mlflow.set_system_metrics_sampling_interval(0.2)
    mlflow.set_system_metrics_samples_before_logging(1)
    try:
        with TrackedRun("exp") as run:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(k.startswith("system/") for k in _run(run.run_id).data.metrics):
                    break
                time.sleep(0.2)
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
        mlflow.set_system_metrics_samples_before_logging(None)
    assert "system/cpu_utilization_percentage" in _run(run.run_id).data.metrics


def test_run_id_before_start_is_a_clear_error() -> None:
    with pytest.raises(MinivessError, match="has not started"):
        _ = TrackedRun("exp").run_id
