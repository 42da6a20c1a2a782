"""Faults during training: SIGKILL at random moments, a full disk, an unwritable output folder.

A real ``minivess train`` process is killed several times at moments drawn from a seeded RNG
(during a step, a checkpoint write, validation or MLflow logging: wherever the draw falls) and
continued each time with ``--resume``. The result must equal, bit for bit, an uninterrupted
run with the same seed, and its MLflow run must hold every epoch exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.v2.integration.processes import checkpoint_epoch
from tests.v2.integration.test_train_cli import segresnet

from minivess.adapters import load_checkpoint
from minivess.data.prepare import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
EPOCHS = 10
KILLS = 3


def _overrides(prepared: PreparedDataset) -> list[str]:
    return segresnet(
        prepared,
        "training.val_every_n_epochs=1",
        f"training.max_epochs={EPOCHS}",
        "tracking.register_model=null",
    )


MEASUREMENTS = {"epoch_time_s", "peak_rss_mb"}
"""History entries that measure the machine, not the training: they differ between runs."""


def _without_times(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in MEASUREMENTS} for r in history]


def test_training_killed_at_random_moments_resumes_to_the_uninterrupted_result(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    from minivess.config.experiment import compose
    from minivess.training.recipe import train

    overrides = _overrides(prepared_synthetic)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed runs below (OMP_NUM_THREADS=1): same reductions
    try:
        reference = train(compose(overrides), tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)

    store = tmp_path / "mlruns" / "mlflow.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIVESS_TRACKING__URI": f"sqlite:///{store}"}
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.pt"
    rng = random.Random(6)
    command = [str(BIN / "minivess"), "train", *overrides, "--run-dir", str(run_dir)]
    kills: list[int] = []
    while True:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if len(kills) < KILLS:
            start = checkpoint_epoch(last)
            deadline = time.monotonic() + 600
            # let the process make progress, then kill it a random moment later
            while checkpoint_epoch(last) <= start and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None and len(kills) < KILLS:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(checkpoint_epoch(last))  # readable: no kill leaves a corrupt last.pt
            assert load_checkpoint(last)[1].extra["trainer"]["train_state"]["epoch"] == kills[-1]
            command = [str(BIN / "minivess"), "train", "--resume", str(run_dir)]
            continue
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors[-3000:]
        break
    assert len(kills) == KILLS, kills

    resumed = json.loads((run_dir / "history.json").read_text())
    assert _without_times(resumed) == _without_times(reference.state.history)
    a, _ = load_checkpoint(reference.run_dir / "checkpoints" / "last.pt")
    b, info = load_checkpoint(last)
    state = info.extra["trainer"]["train_state"]
    assert state["epoch"] == EPOCHS
    assert state["best_metric"] == reference.state.best_metric
    for x, y in zip(a.network.state_dict().values(), b.network.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert not list(last.parent.glob(".*.part"))

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    run_id = info.extra["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    for key, logged_as in (("loss", "train_loss"), ("val_dice", "val_dice")):
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, logged_as)]
        computed = [(int(r["epoch"]), r[key]) for r in reference.state.history]
        assert sorted(logged) == computed, key  # each epoch once, the uninterrupted values
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss_step")]
    assert len(steps) == len(set(steps))
