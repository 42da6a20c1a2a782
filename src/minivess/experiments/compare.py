"""Compare configurations from their runs' per-volume evaluations: intervals and paired tests.

A *configuration* is a set of runs that differ only by seed and fold: an experiment's parent
run (its children are used), any list of run ids, or the rows of an SQL query over
``minivess runs`` grouped by a ``config`` column. Each run contributes its held-out
``evaluation/per_volume.csv`` (logged by ``minivess train``), tagged with the run's seed and
fold, so a configuration is a table of volumes x seeds.

For each metric and configuration:

- **mean with a 95% interval over volumes and seeds**: a two-level percentile bootstrap (volumes
  drawn with replacement, then each drawn volume's seeds with replacement), since seeds of one
  volume are not independent samples; with one seed it is the volume bootstrap of
  :mod:`minivess.evaluation.bootstrap`.
- **paired comparison with the first configuration** (the baseline): each volume's mean over
  seeds, paired by volume id; the mean difference with its volume-bootstrap interval, the
  Wilcoxon signed-rank test (two-sided, zero differences dropped) and the matched-pairs
  rank-biserial correlation (+1: the candidate is higher on every volume, -1: lower).
  p-values are not corrected for multiple comparisons.

NaN values (e.g. HD95 with an empty prediction, see ``docs/evaluation.md``) are left out and
counted; a volume pair with a NaN on either side is not paired.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from minivess.errors import ConfigError, MinivessError
from minivess.evaluation.bootstrap import (
    CONFIDENCE,
    N_BOOT,
    MetricSummary,
    bootstrap_mean_ci,
    check_bootstrap,
)
from minivess.experiments.multirun import PARENT_TAG

PER_VOLUME_ARTIFACT = "evaluation/per_volume.csv"
DEFAULT_METRICS = ("dice", "cldice", "nsd", "hd95")
LOWER_IS_BETTER = frozenset({"hd95", "masd"})


@dataclass(frozen=True)
class Configuration:
    """The per-volume results of one configuration.

    Args:
        label: Name shown in the report.
        run_ids: The runs whose evaluations it holds.
        table: One row per (run, volume): ``run_id``, ``seed``, ``fold``, ``id`` and the metrics.
    """

    label: str
    run_ids: tuple[str, ...]
    table: pd.DataFrame

    def matrix(self, metric: str) -> pd.DataFrame:
        """``metric`` as volumes (rows) x seeds (columns); NaN where undefined or missing."""
        if metric not in self.table:
            raise ConfigError(
                f"metric {metric!r} is not in the evaluations of {self.label!r}; "
                f"choose from {', '.join(str(c) for c in self.table if c not in _KEYS)}"
            )
        return self.table.pivot_table(
            index="id", columns="seed", values=metric, aggfunc="mean", dropna=False
        )


_KEYS = ("run_id", "seed", "fold", "id", "seconds", "vessel_fraction_true", "vessel_fraction_pred")


def expand_runs(run_ids: Sequence[str]) -> list[str]:
    """Each run id, or the ids of its children if it is a parent run (an experiment).

    Raises:
        MinivessError: A run id is not in the tracking store.
    """
    from minivess.evaluation.mlflow_log import check_run
    from minivess.tracking.setup import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    expanded: list[str] = []
    for run_id in run_ids:
        check_run(run_id)
        experiment = client.get_run(run_id).info.experiment_id
        children = client.search_runs(
            [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'"
        )
        expanded.extend(sorted(c.info.run_id for c in children) or [run_id])
    return expanded


def load_configuration(label: str, run_ids: Sequence[str]) -> Configuration:
    """Read the per-volume evaluation of every run (a parent run stands for its children).

    Raises:
        MinivessError: A run is unknown or has no ``evaluation/per_volume.csv``.
    """
    from mlflow.exceptions import MlflowException

    from minivess.tracking.setup import import_mlflow

    client = import_mlflow().MlflowClient()
    frames = []
    runs = expand_runs(run_ids)
    with tempfile.TemporaryDirectory(prefix="minivess-compare-") as tmp:
        for n, run_id in enumerate(runs):
            params = client.get_run(run_id).data.params
            try:
                path = client.download_artifacts(run_id, PER_VOLUME_ARTIFACT, f"{tmp}/{n}")
            except (MlflowException, OSError):
                raise MinivessError(
                    f"run {run_id} has no {PER_VOLUME_ARTIFACT}: compare runs trained by "
                    "`minivess train` or `minivess experiment`, which evaluate held-out volumes"
                ) from None
            frame = pd.read_csv(path)
            frame.insert(0, "run_id", run_id)
            frame.insert(1, "seed", int(params.get("training.seed", 0)))
            frame.insert(2, "fold", int(params.get("data.fold", 0)))
            frames.append(frame)
    return Configuration(label, tuple(runs), pd.concat(frames, ignore_index=True))


def configurations_from_sql(sql: str, experiment: str | None = None) -> list[tuple[str, list[str]]]:
    """``(label, run ids)`` per value of the ``config`` column of an SQL query over runs.

    Raises:
        MinivessError: Bad SQL, or a result without ``run_id`` and ``config`` columns.
    """
    from minivess.tracking.query import query_runs

    frame = query_runs(sql, experiment=experiment)
    if not {"run_id", "config"} <= set(frame.columns):
        raise MinivessError(
            "the query must return columns run_id and config (the configuration label), e.g. "
            "select run_id, param_training_loss_name as config from runs"
        )
    groups = frame.groupby(frame["config"].astype(str), sort=False)["run_id"]
    return [(str(label), [str(r) for r in ids]) for label, ids in groups]


def hierarchical_mean_ci(
    matrix: np.ndarray, *, n_boot: int = N_BOOT, confidence: float = CONFIDENCE, seed: int = 0
) -> MetricSummary:
    """Mean over volumes of each volume's mean over seeds, with a two-level bootstrap interval.

    Args:
        matrix: Volumes x seeds; NaN = undefined or missing.
        n_boot: Bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        The summary; ``n`` counts volumes with a defined value, ``n_nan`` NaN cells.

    Example:
        >>> s = hierarchical_mean_ci(np.array([[0.6, 0.7], [0.8, 0.9]]), n_boot=200)
        >>> round(s.mean, 3), s.n, s.ci_low <= s.mean <= s.ci_high
        (0.75, 2, True)
    """
    check_bootstrap(n_boot, confidence)
    values = np.asarray(matrix, dtype=np.float64).reshape(matrix.shape[0], -1)
    n_nan = int(np.isnan(values).sum())
    defined = values[~np.all(np.isnan(values), axis=1)]
    if defined.size == 0:
        return MetricSummary(math.nan, math.nan, math.nan, 0, n_nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resampled volumes with only NaN
        mean = float(np.nanmean(np.nanmean(defined, axis=1)))
        if defined.shape[1] == 1:
            return _with_nan_count(
                bootstrap_mean_ci(defined[:, 0], n_boot=n_boot, seed=seed), n_nan
            )
        rng = np.random.default_rng(seed)
        n_vol, n_seed = defined.shape
        vols = rng.integers(0, n_vol, size=(n_boot, n_vol, 1))
        seeds = rng.integers(0, n_seed, size=(n_boot, n_vol, n_seed))
        means = np.nanmean(np.nanmean(defined[vols, seeds], axis=2), axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(means, [alpha, 1.0 - alpha])
    return MetricSummary(mean, float(low), float(high), int(n_vol), n_nan)


def paired_test(baseline: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank test and rank-biserial correlation of paired values.

    Args:
        baseline: One value per volume.
        candidate: The same volumes' values for the other configuration.

    Returns:
        ``p_value`` (NaN without a non-zero difference) and ``rank_biserial`` in [-1, 1]
        (positive: candidate higher).

    Example:
        >>> out = paired_test(np.array([0.5, 0.6, 0.7]), np.array([0.6, 0.7, 0.9]))
        >>> out["rank_biserial"], round(out["p_value"], 2)
        (1.0, 0.25)
    """
    from scipy.stats import rankdata, wilcoxon

    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return {"p_value": math.nan, "rank_biserial": 0.0}
    ranks = rankdata(np.abs(nonzero))
    positive, negative = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    p_value = float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"p_value": p_value, "rank_biserial": float((positive - negative) / ranks.sum())}


def compare_configurations(
    configurations: Sequence[Configuration],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (metric, configuration): interval and, against the first, the paired test.

    Returns:
        Columns ``metric``, ``configuration``, ``mean``, ``ci_low``, ``ci_high``, ``n_volumes``,
        ``n_seeds``, ``n_nan``, ``baseline``, ``n_pairs``, ``mean_diff``, ``diff_ci_low``,
        ``diff_ci_high``, ``p_value``, ``rank_biserial`` and ``verdict`` (``better``,
        ``worse`` or ``no clear difference``: whether the difference's interval excludes 0,
        in the metric's direction); the baseline's comparison columns are empty.

    Raises:
        ConfigError: Fewer than two configurations, repeated labels, or an unknown metric.
    """
    if len(configurations) < 2:
        raise ConfigError("compare needs at least two configurations")
    labels = [c.label for c in configurations]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"configuration labels repeat: {labels}; name them LABEL=RUN_IDS")
    rows = []
    for metric in metrics:
        base = configurations[0].matrix(metric)
        for config in configurations:
            matrix = config.matrix(metric)
            summary = hierarchical_mean_ci(matrix.to_numpy(), n_boot=n_boot, seed=seed)
            row: dict[str, Any] = {
                "metric": metric,
                "configuration": config.label,
                "mean": summary.mean,
                "ci_low": summary.ci_low,
                "ci_high": summary.ci_high,
                "n_volumes": summary.n,
                "n_seeds": matrix.shape[1],
                "n_nan": summary.n_nan,
            }
            if config is not configurations[0]:
                row.update(_paired(metric, base, matrix, configurations[0].label, n_boot, seed))
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(
    metric: str, base: pd.DataFrame, other: pd.DataFrame, label: str, n_boot: int, seed: int
) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pairs = pd.concat(
            [base.mean(axis=1).rename("base"), other.mean(axis=1).rename("other")],
            axis=1,
            join="inner",
        ).dropna()
    diff = (pairs["other"] - pairs["base"]).to_numpy()
    interval = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed)
    test = paired_test(pairs["base"].to_numpy(), pairs["other"].to_numpy())
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    excludes_zero = interval.n > 0 and (interval.ci_low > 0 or interval.ci_high < 0)
    verdict = "no clear difference"
    if excludes_zero:
        verdict = "better" if sign * interval.mean > 0 else "worse"
    return {
        "baseline": label,
        "n_pairs": int(diff.size),
        "mean_diff": interval.mean,
        "diff_ci_low": interval.ci_low,
        "diff_ci_high": interval.ci_high,
        **test,
        "verdict": verdict,
    }


def _with_nan_count(summary: MetricSummary, n_nan: int) -> MetricSummary:
    return MetricSummary(summary.mean, summary.ci_low, summary.ci_high, summary.n, n_nan)
