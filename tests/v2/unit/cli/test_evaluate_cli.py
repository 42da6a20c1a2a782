"""``minivess evaluate``: a prepared dataset in, a results table and files out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from minivess.cli.evaluate import evaluate
from minivess.errors import ConfigError, MinivessError


def cli() -> typer.Typer:
    """The command as the ``minivess`` app registers it (a group, so the name is required)."""
    app = typer.Typer()
    app.command("evaluate")(evaluate)
    app.command("noop", hidden=True)(lambda: None)
    return app


def test_evaluate_prints_the_table_and_writes_the_files(
    prepared_synthetic, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(checkpoint), "--data", str(prepared_synthetic.out)]
    result = CliRunner().invoke(cli(), [*args, "--fold", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["fold"] == 0
    assert summary["data"]["subset"] == "val"
    assert "mean" in result.stdout
    assert "95% CI" in result.stdout
    for row in (out / "per_volume.csv").read_text().splitlines()[1:]:
        assert row.split(",")[0] in result.stdout
    assert (out / "figures" / "metrics.png").is_file()


def test_val_without_a_fold_is_a_config_error(prepared_synthetic, checkpoint: Path) -> None:
    result = CliRunner().invoke(
        cli(), ["evaluate", "-m", str(checkpoint), "-d", str(prepared_synthetic.out)]
    )
    assert isinstance(result.exception, ConfigError)
    assert "--fold" in str(result.exception)


@pytest.mark.slow
def test_run_id_logs_into_that_run_and_is_checked_first(
    tracking: str, prepared_synthetic, checkpoint: Path, tmp_path: Path
) -> None:
    import mlflow

    from minivess.tracking.setup import ensure_experiment

    with mlflow.start_run(experiment_id=ensure_experiment("cli-tests")) as run:
        pass
    args = ["evaluate", "-m", str(checkpoint), "-d", str(prepared_synthetic.out), "--fold", "1"]
    bad = CliRunner().invoke(cli(), [*args, "--run-id", "nope", "-o", str(tmp_path / "bad")])
    assert isinstance(bad.exception, MinivessError)
    assert not (tmp_path / "bad").exists()
    good = CliRunner().invoke(
        cli(), [*args, "--run-id", run.info.run_id, "-o", str(tmp_path / "e")]
    )
    assert good.exit_code == 0, good.output
    metrics = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert {"test_dice_mean", "test_dice_ci_low", "test_hd95_mean"} <= set(metrics)
