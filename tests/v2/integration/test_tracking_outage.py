"""A real ``mlflow server`` stopped in the middle of a run: training goes on, nothing is lost.

The server is stopped (its whole process group) and started again on the same port and store.
The training process is paused with SIGSTOP while the server changes state, so the moments of
the outage fall at known epochs however loaded the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.v2.integration.processes import checkpoint_epoch, free_port, stop_group, wait_healthy
from tests.v2.integration.test_train_cli import segresnet

from minivess.data.prepare import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 600  # a bound, not a measurement: a saturated machine starts it slowly
EPOCHS = 10


class MlflowServer:
    """``mlflow server`` on a fixed port and store that can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        log = self.root / "server.log"
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{self.root / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self.root / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_healthy(f"{self.url}/health", self.process, log, START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process)
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> MlflowServer:
    """One server for the module; each test starts it if it is not running."""
    control = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield control  # type: ignore[misc]
    finally:
        control.stop()


def _client(url: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=url)


def _wait_for_epoch(process: subprocess.Popen[str], run_dir: Path, epoch: int) -> None:
    checkpoint = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 600
    while checkpoint_epoch(checkpoint) < epoch:
        assert process.poll() is None, "training ended before the outage was staged"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_training_outlives_a_server_outage_and_delivers_every_metric(
    server: MlflowServer, prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    if not server.running:
        server.start()
    run_dir = tmp_path / "run"
    overrides = segresnet(
        prepared_synthetic,
        f"training.max_epochs={EPOCHS}",
        "training.val_every_n_epochs=1",
        "tracking.register_model=null",
        "tracking.experiment=outage",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIVESS_TRACKING__URI": server.url}
    process = subprocess.Popen(
        [str(BIN / "minivess"), "train", *overrides, "--run-dir", str(run_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_epoch(process, run_dir, 2)
        process.send_signal(signal.SIGSTOP)
        server.stop()
        process.send_signal(signal.SIGCONT)
        _wait_for_epoch(process, run_dir, 5)  # epochs 3-5 are logged into a dead server
        process.send_signal(signal.SIGSTOP)
        server.start()
        process.send_signal(signal.SIGCONT)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    assert "unreachable (connection refused): training goes on" in " ".join(output.split())
    assert "reachable again: delivered" in " ".join(output.split())
    assert not (run_dir / "tracking-spool" / "pending.jsonl").exists()

    history = json.loads((run_dir / "history.json").read_text())
    run_id = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["extra"]["run_id"]
    client = _client(server.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key, logged_as in (("loss", "train_loss"), ("val_dice", "val_dice"), ("lr", "lr")):
        logged = {m.step: m.value for m in client.get_metric_history(run_id, logged_as)}
        computed = {int(r["epoch"]): r[key] for r in history if key in r}
        assert len(computed) == EPOCHS
        assert logged == computed, key  # every epoch exactly once, values bit for bit
    assert "test_dice_mean" in run.data.metrics
    artifacts = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert artifacts == {"plots/loss.png", "plots/val_metrics.png"}
    evaluation = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/summary.json" in evaluation


def test_a_run_ending_during_the_outage_is_kept_and_synced_later(
    server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.cli.main import main
    from minivess.tracking import TrackedRun, configure_tracking, setup
    from minivess.tracking.buffer import SPOOL_DIR, read_pending

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(setup, "_current", setup._Tracking())
    if not server.running:
        server.start()
    configure_tracking(server.url)
    run_dir = tmp_path / "run"
    report = tmp_path / "report.txt"
    report.write_text("held-out dice 0.8\n")
    computed = {step: 1.0 / step for step in range(1, 7)}
    with TrackedRun("outage-sync", spool_dir=run_dir / SPOOL_DIR, log_system_metrics=False) as run:
        run.log_metrics({"loss": computed[1]}, step=1)
        server.stop()
        for step in range(2, 7):
            run.log_metrics({"loss": computed[step]}, step=step)
        run.log_artifact(report, "reports")
        run.set_tags({"stop_reason": "max_epochs"})
    report.unlink()  # the spool kept its own copy
    kinds = [r["kind"] for r in read_pending(run_dir / SPOOL_DIR)]
    assert kinds == ["metrics"] * 5 + ["artifact", "tags", "end"]

    with pytest.raises(SystemExit) as unreachable:
        main(["runs", "sync", str(run_dir)])
    assert unreachable.value.code == 2
    assert "cannot reach the MLflow tracking server" in capsys.readouterr().err
    assert len(read_pending(run_dir / SPOOL_DIR)) == 8  # nothing lost by a failed sync

    server.start()
    monkeypatch.setattr(setup, "_current", setup._Tracking())
    with pytest.raises(SystemExit) as synced:
        main(["runs", "sync", str(run_dir)])
    assert synced.value.code == 0
    assert "delivered 8 tracking records" in " ".join(capsys.readouterr().err.split())
    client = _client(server.url)
    logged = {m.step: m.value for m in client.get_metric_history(run.run_id, "loss")}
    assert logged == computed
    remote = client.get_run(run.run_id)
    assert remote.info.status == "FINISHED"
    assert remote.data.tags["stop_reason"] == "max_epochs"
    assert [f.path for f in client.list_artifacts(run.run_id, "reports")] == ["reports/report.txt"]
    assert read_pending(run_dir / SPOOL_DIR) == []
