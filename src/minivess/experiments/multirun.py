"""An experiment as a distribution: one config trained over several seeds and folds.

:func:`run_experiment` sweeps ``training.seed`` x ``data.fold`` with Hydra (through
:func:`minivess.config.experiment.launch_experiment`) under one MLflow *parent* run. Every job
is a child run (tag ``mlflow.parentRunId``, as MLflow's UI nests them); when all have finished
the parent logs each child metric's mean and standard deviation (``heldout_dice_mean``,
``heldout_dice_std``, ...) and ``n_children``. The parent carries the shared config (params,
``config.yaml``) with the swept keys left out, and tags ``minivess.kind=experiment``,
``minivess.seeds`` and ``minivess.folds``.

Example:
    >>> result = run_experiment(train_task, ["training.max_epochs=3"], seeds=[0, 1, 2],
    ...                         folds=[0], output_dir="runs/experiments/x")  # doctest: +SKIP
    >>> result.aggregate["heldout_dice"]  # doctest: +SKIP
    {'mean': 0.69, 'std': 0.01, 'n': 3}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minivess.config.experiment import ExperimentConfig, compose, launch_experiment
from minivess.errors import ConfigError

PARENT_TAG = "mlflow.parentRunId"
"""Tag MLflow uses to nest a run under its parent."""
KIND_TAG = "minivess.kind"
SWEPT_KEYS = ("training.seed", "data.fold")
AGGREGATED_PREFIXES = ("heldout_", "best_val_dice", "train_minutes")
"""Summary values of the children the parent aggregates."""
RESULT_FILE = "experiment.json"

Task = Callable[[ExperimentConfig, dict[str, str]], Mapping[str, Any]]
"""Trains one job: called with its config and the tags its tracked run must carry."""


@dataclass
class ExperimentResult:
    """What an experiment produced.

    Args:
        output_dir: Folder with one numbered subfolder per job and ``experiment.json``.
        parent_run_id: The MLflow parent run (``None`` with tracking off).
        children: Each job's summary (``run_id``, ``heldout_*`` metrics ...), in job order.
        aggregate: Per aggregated key: ``mean``, ``std`` (sample, 0 for one child) and ``n``.
    """

    output_dir: Path
    parent_run_id: str | None
    children: list[dict[str, Any]] = field(default_factory=list)
    aggregate: dict[str, dict[str, float]] = field(default_factory=dict)


def run_experiment(
    task: Task,
    overrides: Sequence[str],
    *,
    seeds: Sequence[int],
    folds: Sequence[int] = (0,),
    output_dir: str | Path,
    tracking: bool = True,
) -> ExperimentResult:
    """Run ``task`` for every (seed, fold), as children of one MLflow parent run.

    Args:
        task: Trains one job (e.g. :func:`minivess.cli.train.run_job` wrapped) and returns its
            summary; it must pass the tags it is given to its tracked run.
        overrides: Hydra overrides shared by every job (no sweeps, no seed or fold).
        seeds: Values of ``training.seed``.
        folds: Values of ``data.fold``.
        output_dir: Folder for the jobs and ``experiment.json``.
        tracking: Create the parent run (when the config's tracking is enabled).

    Returns:
        The experiment's result.

    Raises:
        ConfigError: No seeds or folds, a repeated value, a sweep or a seed/fold in
            ``overrides``, or an invalid config.
    """
    for key in SWEPT_KEYS:
        if any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides):
            raise ConfigError(f"{key} is swept by the experiment: give it with --seeds/--folds")
    sweep = [_sweep("training.seed", seeds), _sweep("data.fold", folds)]
    base = compose(overrides)  # fails fast on a bad config, before any job starts
    out = Path(output_dir)
    parent = ParentRun(base, seeds, folds) if tracking and base.tracking.enabled else None
    tags = parent.start() if parent is not None else {}
    try:
        children = launch_experiment(
            lambda cfg: dict(task(cfg, tags)), [*overrides, *sweep], output_dir=out, multirun=True
        )
    except BaseException as exc:
        if parent is not None:
            parent.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    result = ExperimentResult(out, parent.run_id if parent else None, children)
    result.aggregate = aggregate(children)
    if parent is not None:
        parent.log_aggregate(result.aggregate, len(children))
        parent.end("FINISHED")
    (out / RESULT_FILE).write_text(
        json.dumps(
            {
                "parent_run_id": result.parent_run_id,
                "aggregate": result.aggregate,
                "children": children,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    return result


def aggregate(children: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation and count of each aggregated child value.

    Keys starting with :data:`AGGREGATED_PREFIXES` are aggregated over the children that have a
    finite number for them.

    Example:
        >>> aggregate([{"heldout_dice": 0.6}, {"heldout_dice": 0.8}])["heldout_dice"]["mean"]
        0.7
    """
    keys = sorted({k for child in children for k in child if k.startswith(AGGREGATED_PREFIXES)})
    result: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [float(c[key]) for c in children if _finite(c.get(key))]
        if not values:
            continue
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        result[key] = {"mean": round(mean, 10), "std": math.sqrt(var), "n": len(values)}
    return result


class ParentRun:
    """The MLflow run an experiment's jobs nest under.

    It is created through the client API rather than as the active run, so that each job can
    still start its own active run.
    """

    def __init__(self, base: ExperimentConfig, seeds: Sequence[int], folds: Sequence[int]):
        self.base = base
        self.seeds = list(seeds)
        self.folds = list(folds)
        self.run_id: str | None = None
        self._client: Any = None

    def start(self) -> dict[str, str]:
        """Create the run, log the shared config; returns the tags each child must carry."""
        from mlflow.entities import Param

        from minivess.config.settings import get_settings
        from minivess.tracking.provenance import config_dict, flatten_params, provenance_tags
        from minivess.tracking.run import CONFIG_ARTIFACT
        from minivess.tracking.setup import ensure_configured, ensure_experiment, import_mlflow

        ensure_configured()
        self._client = import_mlflow().MlflowClient()
        name = self.base.tracking.experiment or get_settings().tracking.experiment
        tags = {
            **provenance_tags(),
            KIND_TAG: "experiment",
            "minivess.seeds": ",".join(map(str, self.seeds)),
            "minivess.folds": ",".join(map(str, self.folds)),
        }
        run = self._client.create_run(ensure_experiment(name), run_name=self.base.name, tags=tags)
        self.run_id = str(run.info.run_id)
        config = config_dict(self.base)
        params = [Param(k, v) for k, v in flatten_params(config).items() if k not in SWEPT_KEYS]
        for start in range(0, len(params), 100):
            self._client.log_batch(self.run_id, params=params[start : start + 100])
        self._client.log_dict(self.run_id, config, CONFIG_ARTIFACT)
        return {PARENT_TAG: self.run_id}

    def log_aggregate(self, values: Mapping[str, Mapping[str, float]], n_children: int) -> None:
        """Log ``<key>_mean`` and ``<key>_std`` of every aggregated value, and ``n_children``."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("n_children", float(n_children), now, 0)]
        for key, stats in values.items():
            metrics.append(Metric(f"{key}_mean", float(stats["mean"]), now, 0))
            metrics.append(Metric(f"{key}_std", float(stats["std"]), now, 0))
        assert self.run_id is not None
        self._client.log_batch(self.run_id, metrics=metrics)

    def end(self, status: str) -> None:
        """Mark the parent ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status)


def _sweep(key: str, values: Sequence[int]) -> str:
    if not values:
        raise ConfigError(f"{key}: give at least one value")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}: values repeat ({list(values)})")
    if any(v < 0 for v in values):
        raise ConfigError(f"{key}: values must be >= 0 ({list(values)})")
    return f"{key}={','.join(str(int(v)) for v in values)}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
