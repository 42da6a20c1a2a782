"""``minivess ensemble / calibrate / conformal / drift`` end to end, logged to MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minivess.cli.main import app


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def second_checkpoint(tmp_path: Path, checkpoint: Path) -> Path:
    """Another tiny model: same config, other seed."""
    from minivess.adapters import build_adapter, load_checkpoint

    _, info = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    adapter = build_adapter(info.adapter, info.config)
    return adapter.save_checkpoint(tmp_path / "seed1" / "best.pt", extra=info.extra)


def test_calibrate_then_conformal_store_both_and_log(
    tracking: str, prepared_synthetic: Any, checkpoint: Path, tmp_path: Path
) -> None:
    from minivess.adapters import load_checkpoint
    from minivess.tracking.setup import import_mlflow
    from minivess.uncertainty import UncertaintyHead

    data = str(prepared_synthetic.out)
    calibrated = tmp_path / "calibrated.pt"
    result = run("calibrate", "-m", str(checkpoint), "-d", data, "--subset", "all",
                 "-o", str(calibrated), "--register", "uq-test")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = tmp_path / "calibrated.d"
    assert {"report.json", "model_card.md", "reliability.png"} <= {p.name for p in report.iterdir()}
    assert "Calibration**: Platt scaling" in (report / "model_card.md").read_text()

    final = tmp_path / "uq.pt"
    result = run("conformal", "-m", str(calibrated), "-d", data, "--subset", "all",
                 "--alpha", "0.2", "--validate", "20", "-o", str(final))  # fmt: skip
    assert result.exit_code == 0, result.output
    _, info = load_checkpoint(final)
    head = UncertaintyHead.from_extra(info.extra)
    assert head is not None
    assert head.calibration is not None
    assert head.fnr_control is not None
    assert head.fnr_control.alpha == 0.2
    assert head.prediction_sets is not None
    assert (tmp_path / "uq.d" / "fnr_guarantee.csv").is_file()

    client = import_mlflow().MlflowClient()
    version = client.get_model_version("uq-test", "1")
    assert "# Model card" in version.description
    run_data = client.get_run(version.run_id).data
    assert "ece_after" in run_data.metrics


def test_ensemble_build_writes_one_loadable_model(
    tracking: str, checkpoint: Path, second_checkpoint: Path, tmp_path: Path
) -> None:
    from minivess.adapters import load_checkpoint
    from minivess.ensemble import EnsembleAdapter

    out = tmp_path / "ensemble.pt"
    result = run("ensemble", "build", str(checkpoint), str(second_checkpoint), "-o", str(out),
                 "--combine", "weighted", "--weights", "1,3", "--log")  # fmt: skip
    assert result.exit_code == 0, result.output
    adapter, info = load_checkpoint(out)
    assert isinstance(adapter, EnsembleAdapter)
    assert info.config["weights"] == [1.0, 3.0]
    assert "ensemble of 2 (weighted)" in out.with_suffix(".md").read_text()
    assert "logged to MLflow run" in result.output


def test_ensemble_rejects_weights_without_weighted(
    checkpoint: Path, second_checkpoint: Path, tmp_path: Path
) -> None:
    result = run("ensemble", "build", str(checkpoint), str(second_checkpoint),
                 "-o", str(tmp_path / "e.pt"), "--weights", "1,1")  # fmt: skip
    assert result.exit_code != 0
    assert not (tmp_path / "e.pt").exists()


def test_drift_flags_shifted_volumes_and_passes_identical_ones(
    tracking: str, prepared_synthetic: Any, tmp_path: Path
) -> None:
    from minivess.data.io import read_volume, write_nifti

    images = prepared_synthetic.out / "images"
    shifted = tmp_path / "shifted"
    for path in sorted(images.iterdir()):
        volume = read_volume(path)
        dim = np.asarray(volume.array, dtype=np.float32) * 0.3 + 40.0
        write_nifti(shifted / path.name, dim.astype(np.float32), like=volume)
    same = tmp_path / "same"
    shutil.copytree(images, same)

    out = tmp_path / "drift"
    result = run("drift", "-r", str(images), "-c", str(shifted), "-o", str(out), "--tile", "16",
                 "--log")  # fmt: skip
    assert result.exit_code == 1, result.output
    verdict = json.loads((out / "drift.json").read_text())
    assert verdict["drifted"] is True
    assert (out / "drift.html").is_file()
    assert "logged to MLflow run" in result.output

    result = run("drift", "-r", str(images), "-c", str(same), "-o", str(tmp_path / "d2"),
                 "--tile", "16")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d2" / "drift.json").read_text())["drifted"] is False
