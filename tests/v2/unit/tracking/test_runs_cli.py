"""``minivess runs``: a leaderboard by default, SQL on demand, in table/csv/markdown/parquet."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from minivess.cli.runs import runs_app
from minivess.errors import MinivessError
from minivess.tracking import TrackedRun

runner = CliRunner()


@pytest.fixture
def two_runs(tracking: str) -> None:
    for name, dice in (("alpha", 0.61), ("beta", 0.83)):
        with TrackedRun("cli", run_name=name, log_system_metrics=False) as run:
            run.log_metrics({"val_dice": dice}, step=1)


def test_without_a_command_prints_the_leaderboard(two_runs: None) -> None:
    result = runner.invoke(runs_app, [])
    assert result.exit_code == 0, result.output
    assert result.stdout.index("beta") < result.stdout.index("alpha")
    assert "0.83" in result.stdout


def test_sql_as_csv_on_stdout(two_runs: None) -> None:
    result = runner.invoke(
        runs_app, ["sql", "select run_name, val_dice from runs order by run_name", "-f", "csv"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame.to_dict("list") == {"run_name": ["alpha", "beta"], "val_dice": [0.61, 0.83]}


def test_sql_as_markdown(two_runs: None) -> None:
    result = runner.invoke(
        runs_app, ["sql", "select run_name from runs order by run_name", "--format", "markdown"]
    )
    assert result.stdout.splitlines() == ["| run_name |", "|---|", "| alpha |", "| beta |"]


def test_files_are_written_in_the_chosen_format(two_runs: None, tmp_path: Path) -> None:
    parquet, text = tmp_path / "runs.parquet", tmp_path / "board.txt"
    result = runner.invoke(
        runs_app, ["sql", "select * from runs", "-f", "parquet", "-o", str(parquet)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_parquet(parquet)["run_name"]) == ["alpha", "beta"]
    assert runner.invoke(runs_app, ["--out", str(text)]).exit_code == 0
    assert "beta" in text.read_text()
    assert list(tmp_path.glob(".*part")) == []


def test_parquet_needs_an_output_file(two_runs: None) -> None:
    result = runner.invoke(runs_app, ["sql", "select 1", "-f", "parquet"])
    assert isinstance(result.exception, MinivessError)
    assert "--out" in str(result.exception)


def test_bad_sql_is_a_user_error(two_runs: None) -> None:
    result = runner.invoke(runs_app, ["sql", "select from where"])
    assert isinstance(result.exception, MinivessError)
    assert str(result.exception).startswith("SQL error: Parser Error")


def test_empty_store_says_so(tracking: str) -> None:
    result = runner.invoke(runs_app, [])
    assert result.exit_code == 0
    assert "no runs tracked yet" in result.stderr
