"""``minivess plan``, ``minivess experiment`` and ``minivess compare`` as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from minivess.data.prepare import PreparedDataset, prepare_dataset
from minivess.data.splits import save_splits, splits_for_prepared
from minivess.experiments.multirun import PARENT_TAG

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "minivess.cli.main"]


def run_cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, tracking to ``store``, one compute thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIVESS_TRACKING__URI": f"sqlite:///{store}"}
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_plan_for_the_shared_volumes(vesselnn_dir: Path, tmp_path: Path) -> None:
    prepared = prepare_dataset(vesselnn_dir, tmp_path / "vesselnn", source="vesselnn")
    save_splits(splits_for_prepared(prepared.out, k=3, seed=42), prepared.out / "splits.json")
    run_cli("plan", str(prepared.out), "--device", "cpu", store=tmp_path / "mlflow.db")
    plan = yaml.safe_load((prepared.out / "plan.yaml").read_text())
    values = {key: setting["value"] for key, setting in plan["settings"].items()}
    # what the measured quick profile uses on a 2-core CPU (docs/training.md)
    assert values["data.patch_size"] == [96, 96, 16]
    assert values["inference.roi_size"] == [96, 96, 16]
    assert values["training.batch_size"] * values["data.samples_per_volume"] == 2
    assert values["data.pos_neg_ratio"] == [2.0, 1.0]  # poon2015_BBB_Leakage: 3% vessel
    assert values["inference.overlap"] == 0.25
    # in-plane spacing 0.62-2.49 um, but radii are more alike in voxels: no resampling
    assert plan["resampling"]["resample"] is False
    assert "more alike in voxels" in plan["resampling"]["reason"]
    assert plan["fingerprint"]["n_volumes"] == 6
    assert plan["fingerprint"]["spacing_range_um"]["d"] == [5.0, 5.0]


def common(prepared: PreparedDataset) -> list[str]:
    return [
        "data.augmentation.enabled=false",
        "training.precision=fp32",
        "inference.precision=fp32",
        "training.scheduler.warmup_epochs=0",
        "training.max_epochs=1",
        "data.patch_size=[32,32,16]",
        "inference.roi_size=[64,64,16]",
        "tracking.experiment=compare-test",
    ]


def cli(*args: str) -> None:
    """The CLI in this process (its imports are paid once), tracking to the test's store."""
    from typer.testing import CliRunner

    from minivess.cli.main import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output[-3000:]}\n{result.exception!r}"


def experiment(runs: Path, seeds: str, *args: str) -> str:
    """Run ``minivess experiment`` over ``seeds``; returns the parent run id."""
    cli("experiment", "--seeds", seeds, "--runs-dir", str(runs), *args)
    (result,) = runs.glob("experiments/*/experiment.json")
    return str(json.loads(result.read_text())["parent_run_id"])


def test_plan_experiment_and_compare(
    tracking: str, prepared_synthetic: PreparedDataset, tmp_path: Path
) -> None:
    data = str(prepared_synthetic.out)
    tiny = ["model.params.init_filters=4", "model.params.num_groups=4"]
    cli("plan", data, *tiny, "--memory-gb", "0.2", "-o", str(tmp_path / "plan.yaml"))
    planned = yaml.safe_load((tmp_path / "plan.yaml").read_text())["settings"]

    # configuration A starts from the plan; the user's patch size beats the planned one
    first = experiment(
        tmp_path / "a", "0,1", "--plan", str(tmp_path / "plan.yaml"), *common(prepared_synthetic)
    )
    # configuration B: the same without the plan, and the plain Dice loss (one seed)
    second = experiment(
        tmp_path / "b",
        "0",
        *common(prepared_synthetic),
        *tiny,
        f"data.dataset_dir={data}",
        f"data.splits_file={data}/splits.json",
        "training.loss.name=dice",
    )

    client = mlflow.MlflowClient()
    parent = client.get_run(first)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_children"] == 2
    assert {"heldout_dice_mean", "heldout_dice_std"} <= set(parent.data.metrics)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{first}'"
    )
    assert sorted(c.data.params["training.seed"] for c in children) == ["0", "1"]
    for child in children:
        assert child.info.run_name == f"quick-seed{child.data.params['training.seed']}-fold0"
        assert child.data.params["data.patch_size"] == "[32, 32, 16]"
        assert child.data.params["data.pos_neg_ratio"] == json.dumps(
            planned["data.pos_neg_ratio"]["value"]
        )
        assert child.data.params["model.params.init_filters"] == "4"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"plan.yaml", "config.yaml", "evaluation"} <= artifacts
        assert child.inputs.dataset_inputs[0].dataset.digest == prepared_synthetic.version[:36]

    report = tmp_path / "report"
    cli("compare", f"dice_ce={first}", f"dice={second}", "--out", str(report), "--n-boot", "500")
    table = (report / "comparison.csv").read_text()
    assert "dice_ce" in table
    assert "rank_biserial" in table
    md = (report / "report.md").read_text()
    assert "## cldice" in md
    assert "seeds [0, 1]" in md
    (logged,) = client.search_runs(
        [parent.info.experiment_id], filter_string="tags.`minivess.kind` = 'compare'"
    )
    assert logged.data.tags["minivess.configurations"] == "dice_ce, dice"
    files = {a.path for a in client.list_artifacts(logged.info.run_id, "compare")}
    assert {"compare/report.md", "compare/report.html", "compare/comparison.csv"} <= files
