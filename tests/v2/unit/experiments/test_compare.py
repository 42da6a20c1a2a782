"""Comparing configurations: two-level bootstrap, paired tests, the table and the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minivess.errors import ConfigError, MinivessError
from minivess.evaluation.bootstrap import bootstrap_mean_ci
from minivess.experiments.compare import (
    Configuration,
    compare_configurations,
    configurations_from_sql,
    expand_runs,
    hierarchical_mean_ci,
    load_configuration,
    paired_test,
)
from minivess.experiments.multirun import PARENT_TAG
from minivess.experiments.report import write_report
from minivess.tracking import TrackedRun

VOLUMES = ["v1", "v2", "v3", "v4", "v5", "v6"]


def configuration(label: str, dice: dict[int, list[float]], hd95_shift: float = 0.0):
    """Per-volume rows for each seed; hd95 falls as dice rises."""
    rows = []
    for seed, values in dice.items():
        for case, value in zip(VOLUMES, values, strict=True):
            rows.append(
                {
                    "run_id": f"{label}-{seed}",
                    "seed": seed,
                    "fold": 0,
                    "id": case,
                    "dice": value,
                    "hd95": 10.0 - 10 * value + hd95_shift,
                }
            )
    runs = tuple(dict.fromkeys(r["run_id"] for r in rows))
    return Configuration(label, runs, pd.DataFrame(rows))


BASE = [0.60, 0.65, 0.70, 0.55, 0.75, 0.68]


def test_one_seed_gives_the_volume_bootstrap() -> None:
    values = np.array(BASE)[:, None]
    two_level = hierarchical_mean_ci(values, n_boot=2000, seed=3)
    flat = bootstrap_mean_ci(values[:, 0], n_boot=2000, seed=3)
    assert (two_level.mean, two_level.ci_low, two_level.ci_high) == pytest.approx(
        (flat.mean, flat.ci_low, flat.ci_high)
    )


def test_interval_over_volumes_and_seeds_counts_nan() -> None:
    matrix = np.array([[0.6, 0.62], [0.7, np.nan], [0.8, 0.78], [np.nan, np.nan]])
    summary = hierarchical_mean_ci(matrix, n_boot=2000)
    assert summary.mean == pytest.approx(np.mean([0.61, 0.7, 0.79]))
    assert summary.n == 3
    assert summary.n_nan == 3
    assert summary.ci_low < summary.mean < summary.ci_high


def test_undefined_everywhere_is_nan() -> None:
    summary = hierarchical_mean_ci(np.full((3, 2), np.nan), n_boot=10)
    assert math.isnan(summary.mean)
    assert summary.n == 0


def test_seed_noise_widens_the_interval() -> None:
    steady = np.repeat(np.array(BASE)[:, None], 3, axis=1)
    noisy = steady + np.array([-0.1, 0.0, 0.1])
    assert hierarchical_mean_ci(noisy).ci_high - hierarchical_mean_ci(noisy).ci_low > (
        hierarchical_mean_ci(steady).ci_high - hierarchical_mean_ci(steady).ci_low
    )


def test_paired_test_signs_and_zeros() -> None:
    base = np.array(BASE)
    better = paired_test(base, base + np.linspace(0.01, 0.06, 6))
    assert better["rank_biserial"] == 1.0
    assert better["p_value"] == pytest.approx(0.03125)  # exact: 2 / 2**6
    worse = paired_test(base, base - np.linspace(0.01, 0.06, 6))
    assert worse["rank_biserial"] == -1.0
    same = paired_test(base, base)
    assert math.isnan(same["p_value"])
    assert same["rank_biserial"] == 0.0


def test_comparison_table_against_the_baseline() -> None:
    base = configuration("base", {0: BASE, 1: [v + 0.01 for v in BASE]})
    better = configuration("better", {0: [v + 0.05 for v in BASE], 1: [v + 0.06 for v in BASE]})
    table = compare_configurations([base, better], ["dice", "hd95"], n_boot=2000)
    assert list(table["configuration"]) == ["base", "better", "base", "better"]
    rows = table.set_index(["metric", "configuration"])
    assert math.isnan(rows.loc[("dice", "base"), "mean_diff"])
    dice = rows.loc[("dice", "better")]
    assert dice["mean_diff"] == pytest.approx(0.05)
    assert dice["n_pairs"] == 6
    assert dice["n_seeds"] == 2
    assert dice["rank_biserial"] == 1.0
    assert dice["verdict"] == "better"
    hd95 = rows.loc[("hd95", "better")]
    assert hd95["mean_diff"] == pytest.approx(-0.5)
    assert hd95["verdict"] == "better"  # lower distances are better


def test_mixed_differences_are_not_called() -> None:
    base = configuration("a", {0: BASE})
    mixed = configuration("b", {0: [v + d for v, d in zip(BASE, [0.05, -0.05] * 3, strict=True)]})
    table = compare_configurations([base, mixed], ["dice"], n_boot=2000)
    assert table.iloc[1]["verdict"] == "no clear difference"


def test_volumes_are_paired_by_id_only_where_both_have_them() -> None:
    base = configuration("a", {0: BASE})
    other = configuration("b", {0: BASE})
    other = Configuration("b", other.run_ids, other.table[other.table["id"] != "v6"])
    table = compare_configurations([base, other], ["dice"], n_boot=100)
    assert table.iloc[1]["n_pairs"] == 5


def test_bad_requests_are_config_errors() -> None:
    base = configuration("a", {0: BASE})
    with pytest.raises(ConfigError, match="at least two"):
        compare_configurations([base], ["dice"])
    with pytest.raises(ConfigError, match="labels repeat"):
        compare_configurations([base, base], ["dice"])
    with pytest.raises(ConfigError, match=r"metric 'nsd'.*choose from dice, hd95"):
        compare_configurations([base, configuration("b", {0: BASE})], ["nsd"])


def test_report_files(tmp_path: Path) -> None:
    configs = [
        configuration("base", {0: BASE}),
        configuration("new", {0: [v + 0.05 for v in BASE]}),
    ]
    table = compare_configurations(configs, ["dice", "hd95"], n_boot=500)
    files = write_report(configs, table, tmp_path / "report")
    names = {p.relative_to(tmp_path / "report").as_posix() for p in files}
    assert names == {
        "comparison.csv",
        "per_volume.csv",
        "figures/compare.png",
        "report.md",
        "report.html",
    }
    assert (tmp_path / "report/figures/compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report/report.md").read_text()
    assert "## dice" in md
    assert "| new |" in md
    assert "Wilcoxon p" in md
    assert "better" in md
    html = (tmp_path / "report/report.html").read_text()
    assert html.startswith("<!doctype html>")
    assert html.count("<table>") == 2
    assert 'src="figures/compare.png"' in html
    per_volume = pd.read_csv(tmp_path / "report/per_volume.csv")
    assert set(per_volume["configuration"]) == {"base", "new"}
    assert len(per_volume) == 12


def logged_run(tmp_path: Path, name: str, seed: int, dice: list[float], **tags: str) -> str:
    """A real tracked run holding a per-volume evaluation, as ``minivess train`` logs it."""
    table = tmp_path / name / "per_volume.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"id": VOLUMES[: len(dice)], "dice": dice}).to_csv(table, index=False)
    config = {"training": {"seed": seed}, "data": {"fold": 0}, "loss": name.split("-")[0]}
    with TrackedRun(
        "compare", run_name=name, config=config, tags=tags, log_system_metrics=False
    ) as run:
        run.log_artifact(table, "evaluation")
    return run.run_id


def test_configurations_from_tracked_runs(tracking: str, tmp_path: Path) -> None:
    with TrackedRun("compare", run_name="parent", log_system_metrics=False) as parent:
        pass
    children = [
        logged_run(tmp_path, f"dice-{s}", s, BASE[:3], **{PARENT_TAG: parent.run_id})
        for s in (0, 1)
    ]
    other = logged_run(tmp_path, "focal-0", 0, [v + 0.1 for v in BASE[:3]])

    assert sorted(expand_runs([parent.run_id, other])) == sorted([*children, other])
    config = load_configuration("dice", [parent.run_id])
    assert sorted(config.run_ids) == sorted(children)
    assert config.matrix("dice").shape == (3, 2)  # volumes x seeds

    groups = configurations_from_sql(
        "select run_id, param_loss as config from runs where param_loss is not null"
    )
    assert sorted((label, len(ids)) for label, ids in groups) == [("dice", 2), ("focal", 1)]
    with pytest.raises(MinivessError, match="run_id and config"):
        configurations_from_sql("select run_id from runs")
    with TrackedRun("compare", run_name="bare", log_system_metrics=False) as bare:
        pass
    with pytest.raises(MinivessError, match=r"has no evaluation/per_volume\.csv"):
        load_configuration("bare", [bare.run_id])
    with pytest.raises(MinivessError, match="no MLflow run"):
        expand_runs(["0" * 32])
