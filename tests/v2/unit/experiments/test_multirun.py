"""Experiments over seeds and folds: a real MLflow parent run with one child per job."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytest

from minivess.config.experiment import ExperimentConfig
from minivess.data.prepare import PreparedDataset
from minivess.errors import ConfigError
from minivess.experiments.multirun import PARENT_TAG, aggregate, run_experiment
from minivess.tracking import TrackedRun


def shared(prepared: PreparedDataset) -> list[str]:
    return [
        f"data.dataset_dir={prepared.out}",
        f"data.splits_file={prepared.out / 'splits.json'}",
        "tracking.experiment=multirun-test",
    ]


def fake_training(cfg: ExperimentConfig, tags: Mapping[str, str]) -> dict[str, Any]:
    """A job that trains nothing but is tracked like one: its score is a function of its seed."""
    with TrackedRun(
        cfg.tracking.experiment,
        config=cfg,
        dataset_dir=cfg.data.dataset_dir,
        tags=dict(tags),
        log_system_metrics=False,
    ) as run:
        dice = 0.5 + 0.1 * cfg.training.seed + 0.01 * cfg.data.fold
        run.log_metrics({"heldout_dice": dice}, step=0)
    return {"run_id": run.run_id, "heldout_dice": dice, "epochs": 1}


def test_aggregate_mean_and_sample_std() -> None:
    stats = aggregate([{"heldout_dice": 0.6, "epochs": 3}, {"heldout_dice": 0.8}])
    assert set(stats) == {"heldout_dice"}
    assert stats["heldout_dice"]["mean"] == pytest.approx(0.7)
    assert stats["heldout_dice"]["std"] == pytest.approx(0.1414213562)
    assert stats["heldout_dice"]["n"] == 2
    nan = aggregate([{"heldout_hd95": float("nan")}, {"heldout_hd95": 2.0}])
    assert nan["heldout_hd95"] == {"mean": 2.0, "std": 0.0, "n": 1}


def test_children_nest_under_a_parent_that_aggregates_them(
    tracking: str, prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    result = run_experiment(
        fake_training,
        shared(prepared_synthetic),
        seeds=[0, 1],
        folds=[0, 1],
        output_dir=tmp_path / "exp",
    )
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["minivess.kind"] == "experiment"
    assert parent.data.tags["minivess.seeds"] == "0,1"
    assert "training.seed" not in parent.data.params
    assert parent.data.params["data.dataset_dir"] == str(prepared_synthetic.out)
    assert parent.data.metrics["n_children"] == 4
    assert parent.data.metrics["heldout_dice_mean"] == pytest.approx(0.555)
    assert parent.data.metrics["heldout_dice_std"] > 0
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_id for c in children) == sorted(c["run_id"] for c in result.children)
    combos = sorted((c.data.params["training.seed"], c.data.params["data.fold"]) for c in children)
    assert combos == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert (tmp_path / "exp" / "experiment.json").is_file()


def test_a_failing_job_fails_the_parent(
    tracking: str, prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    def broken(cfg: ExperimentConfig, tags: Mapping[str, str]) -> dict[str, Any]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(broken, shared(prepared_synthetic), seeds=[0], output_dir=tmp_path / "x")
    (parent,) = mlflow.search_runs(experiment_names=["multirun-test"], output_format="list")
    assert parent.info.status == "FAILED"


def test_seed_and_fold_belong_to_the_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.seed is swept"):
        run_experiment(fake_training, ["training.seed=3"], seeds=[0], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="values repeat"):
        run_experiment(fake_training, [], seeds=[0, 0], output_dir=tmp_path)
