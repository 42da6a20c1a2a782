"""``minivess train`` as users run it: other adapters, a plugin, sweeps, and kill/resume."""

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

from minivess.adapters import load_checkpoint
from minivess.data.prepare import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def base(prepared: PreparedDataset, *extra: str) -> list[str]:
    return [
        f"data.dataset_dir={prepared.out}",
        f"data.splits_file={prepared.out / 'splits.json'}",
        "data.augmentation.enabled=false",
        "training.precision=fp32",
        "inference.precision=fp32",
        "training.scheduler.warmup_epochs=0",
        *extra,
    ]


def segresnet(prepared: PreparedDataset, *extra: str) -> list[str]:
    return base(
        prepared,
        "data.patch_size=[32,32,16]",
        "inference.roi_size=[64,64,16]",
        "model.params.init_filters=4",
        "model.params.num_groups=4",
        *extra,
    )


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every CLI call of a test logs to that test's own SQLite MLflow store."""
    store = tmp_path / "mlruns" / "mlflow.db"
    monkeypatch.setenv("MINIVESS_TRACKING__URI", f"sqlite:///{store}")
    return store


def minivess(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    result = subprocess.run(
        [str(BIN / "minivess"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def only_checkpoint(runs: Path, name: str = "last.pt") -> Path:
    found = sorted(runs.rglob(name))
    assert len(found) == 1, found
    return found[0]


def test_swinunetr_trains_through_the_same_command(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    overrides = base(
        prepared_synthetic,
        "model=swinunetr",
        "model.params.feature_size=12",
        "data.patch_size=[64,64,32]",
        "inference.roi_size=[64,64,32]",
        "training.max_epochs=1",
    )
    minivess("train", *overrides, "--runs-dir", str(tmp_path / "runs"), "--no-tracking")
    adapter, info = load_checkpoint(only_checkpoint(tmp_path / "runs"))
    assert info.adapter == "swinunetr"
    assert adapter.config.use_checkpoint is True  # gradient checkpointing on by default


def test_example_plugin_trains_through_the_same_command(
    prepared_synthetic: PreparedDataset, plugin_site: Path, tmp_path: Path
) -> None:
    overrides = base(
        prepared_synthetic,
        "model=unet2d",
        "model.params.channels=[4,8,16]",
        "model.params.strides=[2,2]",
        "data.patch_size=[32,32,4]",
        "inference.roi_size=[64,64,1]",
        "training.max_epochs=2",
    )
    minivess(
        "train",
        *overrides,
        "--runs-dir",
        str(tmp_path / "runs"),
        env={"PYTHONPATH": str(plugin_site)},
    )
    checkpoint = only_checkpoint(tmp_path / "runs")
    info = torch.load(checkpoint, weights_only=True)
    assert info["adapter"] == "unet2d"
    assert info["extra"]["trainer"]["train_state"]["epoch"] == 2


def test_multirun_sweeps_seeds(prepared_synthetic: PreparedDataset, tmp_path: Path) -> None:
    overrides = segresnet(prepared_synthetic, "training.max_epochs=1", "training.seed=0,1")
    minivess("train", "-m", *overrides, "--runs-dir", str(tmp_path / "runs"))
    configs = sorted((tmp_path / "runs").rglob("config.json"))
    assert [json.loads(p.read_text())["training"]["seed"] for p in configs] == [0, 1]
    assert len(list((tmp_path / "runs").rglob("last.pt"))) == 2


def _epoch_of(checkpoint: Path) -> int:
    try:
        return int(
            torch.load(checkpoint, weights_only=True)["extra"]["trainer"]["train_state"]["epoch"]
        )
    except Exception:  # being written right now: atomic rename makes this rare
        return -1


def test_killed_training_resumes_to_the_same_result(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    overrides = segresnet(prepared_synthetic, "training.max_epochs=8")
    minivess("train", *overrides, "--runs-dir", str(tmp_path / "full"))
    full = only_checkpoint(tmp_path / "full")

    runs = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(BIN / "minivess"), "train", *overrides, "--runs-dir", str(runs)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # includes the test's tracking store
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(runs.rglob("last.pt"))
        if found and _epoch_of(found[0]) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = only_checkpoint(runs)
    assert 3 <= _epoch_of(killed) < 8

    run_id = torch.load(killed, weights_only=True)["extra"]["run_id"]
    minivess("train", "--resume", str(killed.parent.parent))
    a, _ = load_checkpoint(full)
    b, info = load_checkpoint(killed)
    assert info.extra["trainer"]["train_state"]["epoch"] == 8
    for x, y in zip(a.network.state_dict().values(), b.network.state_dict().values(), strict=True):
        assert torch.equal(x, y)

    # the resumed process continued the killed process's MLflow run: every epoch once
    import mlflow

    mlflow.set_tracking_uri(os.environ["MINIVESS_TRACKING__URI"])
    client = mlflow.MlflowClient()
    assert info.extra["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, 9))
