"""Tracking against a real ``mlflow server`` on 127.0.0.1: runs, models, registry and SQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.v2.integration.processes import free_port, wait_healthy

from minivess.adapters import build_adapter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90
TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with one worker and no job consumers, in its own process group."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopping it stops its children
        )
    try:
        wait_healthy(f"{url}/health", process, log, START_TIMEOUT_S)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def tracking_server(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.tracking import configure_tracking, setup

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(setup, "_current", setup._Tracking())
    return configure_tracking(server)


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    inference = {"roi_size": [16, 16, 8], "overlap": 0.25, "sw_batch_size": 1, "precision": "fp32"}
    return adapter.save_checkpoint(path, extra={"inference": inference})


def test_runs_models_registry_and_sql_over_http(tracking_server: str, tmp_path: Path) -> None:
    import mlflow

    from minivess.tracking import (
        CHAMPION,
        TrackedRun,
        log_model,
        query_runs,
        register_and_promote,
    )

    checkpoint = _checkpoint(tmp_path / "best.pt")
    config = {"model": {"name": "segresnet"}, "training": {"max_epochs": 2}}
    run_ids = []
    for name, dice in (("first", 0.6), ("worse", 0.5), ("better", 0.7)):
        with TrackedRun("served", run_name=name, config=config, log_system_metrics=False) as run:
            run.log_metrics({"val_dice": dice}, step=1)
            log_model(checkpoint)
        run_ids.append(run.run_id)
    outcomes = [register_and_promote(r, "served-model", split_id="s1") for r in run_ids]
    assert [o.promoted for o in outcomes] == [True, False, True]

    client = mlflow.MlflowClient()
    assert client.get_run(run_ids[0]).data.params["training.max_epochs"] == "2"
    assert {f.path for f in client.list_artifacts(run_ids[0])} >= {"config.yaml"}
    champion = client.get_model_version_by_alias("served-model", CHAMPION)
    assert str(champion.version) == outcomes[2].version
    model = mlflow.pyfunc.load_model(f"models:/served-model@{CHAMPION}")
    probabilities = model.predict(np.random.default_rng(0).random((1, 1, 20, 12, 9), np.float32))
    assert probabilities.shape == (1, 2, 20, 12, 9)

    board = query_runs(
        "select run_name, val_dice, param_model_name from runs order by val_dice desc",
        experiment="served",
    )
    assert board["run_name"].tolist() == ["better", "first", "worse"]
    assert set(board["param_model_name"]) == {"segresnet"}
