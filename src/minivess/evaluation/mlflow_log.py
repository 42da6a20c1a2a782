"""Attach an evaluation to an MLflow run: its files as artifacts, its summary as metrics.

MLflow is imported only when there is a run to log into: evaluating with tracking off never
pays for the import.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from minivess.errors import MinivessError

if TYPE_CHECKING:
    from minivess.evaluation.evaluate import EvaluationResult

METRIC_PREFIX = "test_"
ARTIFACT_DIR = "evaluation"
"""Artifact folder of the run the files go into."""


def summary_metrics(result: EvaluationResult) -> dict[str, float]:
    """``test_<metric>_mean``, ``test_<metric>_ci_low`` and ``test_<metric>_ci_high``.

    A metric no volume defines is left out rather than logged as NaN.
    """
    metrics: dict[str, float] = {}
    for name, stats in result.summary.items():
        if math.isnan(stats.mean):
            continue
        metrics[f"{METRIC_PREFIX}{name}_mean"] = stats.mean
        metrics[f"{METRIC_PREFIX}{name}_ci_low"] = stats.ci_low
        metrics[f"{METRIC_PREFIX}{name}_ci_high"] = stats.ci_high
    return metrics


def log_evaluation(
    result: EvaluationResult,
    out_dir: Path,
    files: Sequence[Path],
    *,
    run_id: str | None = None,
) -> str | None:
    """Log saved evaluation files and summary metrics to ``run_id`` or the active run.

    Args:
        result: The evaluation.
        out_dir: Folder the files were saved in; their paths below it are kept under the
            run's ``evaluation/`` artifacts.
        files: The saved files.
        run_id: The run to log into; ``None`` means the active run, and nothing is logged
            when no run is active.

    Returns:
        The run logged into, or ``None``.

    Raises:
        MinivessError: ``run_id`` names no run in the configured tracking store.
    """
    if run_id is None:
        run_id = _active_run_id()
        if run_id is None:
            return None
    else:
        check_run(run_id)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_dir(out_dir, path))
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in summary_metrics(result).items()]
    client.log_batch(run_id, metrics=metrics, synchronous=True)
    return run_id


def artifact_dir(out_dir: Path, path: Path) -> str:
    """The run's artifact folder for ``path``, a file saved below ``out_dir``."""
    parent = path.relative_to(out_dir).parent
    return f"{ARTIFACT_DIR}/{parent.as_posix()}" if parent.parts else ARTIFACT_DIR


def check_run(run_id: str) -> None:
    """Fail early, before minutes of evaluation, if ``run_id`` is not a run of the store.

    The store is the configured one (:func:`minivess.tracking.setup.ensure_configured`).

    Raises:
        MinivessError: No such run; the message names the store.
    """
    from minivess.tracking.setup import ensure_configured, import_mlflow

    uri = ensure_configured()
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        raise MinivessError(
            f"no MLflow run {run_id!r} in the tracking store {uri}; check the run id, or set "
            "tracking.uri (MINIVESS_TRACKING__URI)"
        ) from None


def _active_run_id() -> str | None:
    """The active run's id; without importing MLflow, which cannot have one if not imported."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    run = mlflow.active_run()
    return None if run is None else str(run.info.run_id)
