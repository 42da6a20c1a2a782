"""Log a benchmark report to MLflow: one run per ``just bench``, comparable with SQL.

The run goes to the project's tracking store (``configure_tracking``: the embedded SQLite
``mlruns/mlflow.db`` unless the settings name a server), experiment ``minivess-benchmarks``.
Every number of the report becomes a metric named by its path
(``inference.512x512x25.project.speedup``), the settings become parameters, the machine and
code versions tags, and the rendered page plus the raw figures artifacts.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "minivess-benchmarks"
_SKIPPED = {"mask", "per_volume"}  # arrays, and per-volume Dice already in the artifacts


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Every number in ``report`` by its dotted path; inference rows are keyed by shape.

    Example:
        >>> flat_metrics({"training": {"ratio": 1.5, "project": {"precision": "bf16"}}})
        {'training.ratio': 1.5}
    """
    return dict(_numbers(report, ""))


def _numbers(value: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield prefix, float(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in _SKIPPED:
                yield from _numbers(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, item in enumerate(value):
            shape = item.get("shape")
            name = "x".join(map(str, shape)) if isinstance(shape, list) else str(i)
            yield from _numbers(item, f"{prefix}.{name}")


def log_report(report: Mapping[str, Any], page: str, uri: str | None = None) -> str:
    """Log ``report`` and its rendered ``page`` as one MLflow run; returns the run id.

    Args:
        report: What :func:`benchmarks.run_all.collect` returned.
        page: The Markdown written to docs/benchmarks.md.
        uri: Tracking URI; ``None`` uses the project's settings (embedded SQLite by default).
    """
    from minivess.tracking.provenance import provenance_tags
    from minivess.tracking.setup import configure_tracking, ensure_experiment, import_mlflow

    configure_tracking(uri)
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(EXPERIMENT)
    tags = {**provenance_tags(), "model": str(report.get("model", ""))}
    run = client.create_run(experiment_id, run_name="just bench", tags=tags)
    run_id = str(run.info.run_id)
    try:
        metrics = [
            mlflow.entities.Metric(key, value, 0, 0)
            for key, value in sorted(flat_metrics(report).items())
        ]
        params = [
            mlflow.entities.Param(key, json.dumps(value))
            for key, value in sorted(report.get("settings", {}).items())
        ]
        for start in range(0, max(len(metrics), len(params)), 100):
            client.log_batch(
                run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
            )
        with tempfile.TemporaryDirectory(prefix="minivess-bench-log-") as tmp:
            folder = Path(tmp)
            (folder / "benchmarks.md").write_text(page, encoding="utf-8")
            (folder / "report.json").write_text(json.dumps(report, indent=1))
            client.log_artifacts(run_id, str(folder))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
