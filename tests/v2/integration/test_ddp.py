"""Data-parallel training launched by torchrun: two CPU processes on the gloo backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minivess.adapters import load_checkpoint
from minivess.data.prepare import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def test_torchrun_two_processes_train_one_model(
    prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    overrides = [
        f"data.dataset_dir={prepared_synthetic.out}",
        f"data.splits_file={prepared_synthetic.out / 'splits.json'}",
        "data.patch_size=[32,32,16]",
        "inference.roi_size=[64,64,16]",
        "model.params.init_filters=4",
        "model.params.num_groups=4",
        "training.batch_size=1",
        "training.max_epochs=2",
        "training.precision=fp32",
        "inference.precision=fp32",
        "training.scheduler.warmup_epochs=0",
    ]
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc-per-node=2",
        "--no-python",
        str(BIN / "minivess"),
        "train",
        *overrides,
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MINIVESS_TRACKING__URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]

    checkpoints = list((tmp_path / "runs").rglob("last.pt"))
    assert len(checkpoints) == 1  # only rank 0 writes
    _, info = load_checkpoint(checkpoints[0])
    assert info.extra["world_size"] == 2
    state = info.extra["trainer"]["train_state"]
    # two training volumes, one per rank, batch 1: one optimizer step per epoch per rank
    assert state["iteration"] == 2
    assert 0.0 <= state["metrics"]["dice"] <= 1.0

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1  # one tracked run for the job, from rank 0 only
    assert runs.iloc[0]["run_id"] == info.extra["run_id"]
