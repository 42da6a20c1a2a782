"""SQL over runs: predictable column names, every run visible, DuckDB errors in one line."""

from __future__ import annotations

import math

import pytest

from minivess.errors import MinivessError
from minivess.tracking import TrackedRun, leaderboard, query_runs, runs_frame
from minivess.tracking.query import sql_columns


def _log(experiment: str, name: str, dice: float, lr: str) -> str:
    config = {"model": {"name": "segresnet"}, "training": {"optimizer": {"lr": lr}}}
    with TrackedRun(experiment, run_name=name, config=config, log_system_metrics=False) as run:
        run.log_metrics({"val_dice": dice, "val_recall": dice / 2, "train_loss": 1 - dice}, 1)
    return run.run_id


def test_columns_are_renamed_to_sql_names_without_collisions() -> None:
    columns = [
        "run_id",
        "status",
        "metrics.val_dice",
        "metrics.status",
        "metrics.Val-Dice",
        "metrics.val dice",
        "params.training.optimizer.lr",
        "tags.git_commit",
        "tags.mlflow.user",
    ]
    assert sql_columns(columns) == {
        "run_id": "run_id",
        "status": "status",
        "metrics.val_dice": "val_dice",
        "metrics.status": "metric_status",
        "metrics.Val-Dice": "metric_val_dice",
        "metrics.val dice": "metric_val_dice_2",
        "params.training.optimizer.lr": "param_training_optimizer_lr",
        "tags.git_commit": "tag_git_commit",
        "tags.mlflow.user": "tag_mlflow_user",
    }


def test_query_sees_every_run_with_renamed_columns(tracking: str) -> None:
    _log("a", "low", 0.5, "0.001")
    _log("a", "high", 0.8, "0.002")
    _log("b", "other", 0.9, "0.003")
    result = query_runs(
        "select run_name, experiment, val_dice, param_training_optimizer_lr as lr "
        "from runs where status = 'FINISHED' order by val_dice"
    )
    assert result.to_dict("list") == {
        "run_name": ["low", "high", "other"],
        "experiment": ["a", "a", "b"],
        "val_dice": [0.5, 0.8, 0.9],
        "lr": ["0.001", "0.002", "0.003"],
    }
    only_a = query_runs("select count(*) as n from runs", experiment="a")
    assert int(only_a["n"][0]) == 2


def test_frame_has_provenance_tags_and_durations(tracking: str) -> None:
    _log("a", "one", 0.5, "0.001")
    frame = runs_frame()
    row = frame.iloc[0]
    assert row["tag_minivess_version"]
    assert row["duration_s"] >= 0
    assert not math.isnan(row["duration_s"])
    assert list(frame.columns[:4]) == ["run_id", "experiment_id", "experiment", "run_name"]


def test_leaderboard_ranks_by_the_metric(tracking: str) -> None:
    _log("a", "low", 0.5, "0.001")
    _log("a", "high", 0.8, "0.002")
    board = leaderboard("val_dice", limit=1)
    assert board["run_name"].tolist() == ["high"]
    assert board.columns.tolist() == [
        "run_name",
        "val_dice",
        "val_recall",
        "param_model_name",
        "experiment",
        "status",
        "start_time",
        "run_id",
    ]
    with pytest.raises(MinivessError, match=r"no run logged the metric 'val_cldice'.*val_dice"):
        leaderboard("val_cldice")


def test_bad_sql_is_one_line_with_duckdbs_reason(tracking: str) -> None:
    _log("a", "one", 0.5, "0.001")
    with pytest.raises(MinivessError, match=r'SQL error: .*"nope" not found') as excinfo:
        query_runs("select nope\nfrom runs")
    assert "\n" not in str(excinfo.value)


def test_unknown_experiment_lists_known_ones(tracking: str) -> None:
    _log("a", "one", 0.5, "0.001")
    with pytest.raises(MinivessError, match=r"no experiment named 'zzz' \(known: .*a"):
        query_runs("select * from runs", experiment="zzz")


def test_an_empty_store_still_has_the_view(tracking: str) -> None:
    assert len(query_runs("select run_id, status from runs")) == 0
    assert leaderboard().empty
