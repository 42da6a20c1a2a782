"""SQL over tracked runs: every run as one row of a DuckDB view named ``runs``.

Columns of the view (MLflow's ``search_runs`` frame, renamed to plain SQL identifiers):

- ``run_id``, ``experiment_id``, ``experiment`` (name), ``run_name``, ``status``,
  ``start_time``, ``end_time``, ``duration_s``, ``artifact_uri``;
- each metric under its own name: ``metrics.val_dice`` -> ``val_dice``;
- each parameter with ``param_``: ``params.training.optimizer.lr`` ->
  ``param_training_optimizer_lr`` (values are text);
- each tag with ``tag_``: ``tags.git_commit`` -> ``tag_git_commit``; MLflow's own
  ``mlflow.*`` tags keep their prefix (``tag_mlflow_user``).

Names are lower-cased and every character outside ``[a-z0-9_]`` becomes ``_``. A metric whose
name is already taken (``status``) becomes ``metric_status``; any remaining clash gets ``_2``,
``_3``, ... in column order.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from minivess.errors import MinivessError
from minivess.tracking.setup import ensure_configured, import_mlflow

if TYPE_CHECKING:
    import pandas as pd

VIEW = "runs"
_BASE = (
    "run_id",
    "experiment_id",
    "experiment",
    "run_name",
    "status",
    "start_time",
    "end_time",
    "duration_s",
    "artifact_uri",
)
_PREFIXES = {"metrics.": "", "params.": "param_", "tags.": "tag_"}


def sql_name(text: str) -> str:
    """``text`` as a lower-case SQL identifier of ``[a-z0-9_]``.

    Example:
        >>> sql_name("Val Dice/95%")
        'val_dice_95_'
    """
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def sql_columns(columns: list[str]) -> dict[str, str]:
    """Map MLflow ``search_runs`` column names to unique SQL names (see the module doc)."""
    taken = {name for name in columns if name in _BASE}
    mapping = {name: name for name in taken}
    for column in columns:
        if column in mapping:
            continue
        kind = next((p for p in _PREFIXES if column.startswith(p)), "")
        name = _PREFIXES.get(kind, "") + sql_name(column.removeprefix(kind))
        if name in taken and kind == "metrics.":
            name = f"metric_{name}"
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}_{n}", n + 1
        taken.add(unique)
        mapping[column] = unique
    return mapping


def runs_frame(experiment: str | None = None) -> pd.DataFrame:
    """All runs of ``experiment`` (every experiment if ``None``), one row each, SQL-named.

    Raises:
        MinivessError: No experiment has that name.
    """
    ensure_configured()
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None:
        ids = [i for i, name in experiments.items() if name == experiment]
        if not ids:
            known = ", ".join(sorted(experiments.values())) or "none"
            raise MinivessError(f"no experiment named {experiment!r} (known: {known})")
    else:
        ids = list(experiments)
    frame = mlflow.search_runs(experiment_ids=ids, output_format="pandas") if ids else None
    if frame is None or frame.empty:
        import pandas as pd

        return pd.DataFrame({column: pd.Series(dtype=object) for column in _BASE})
    frame = frame.copy()
    frame.insert(2, "experiment", frame["experiment_id"].map(experiments))
    frame.insert(3, "run_name", frame.get("tags.mlflow.runName"))
    frame.insert(6, "duration_s", (frame["end_time"] - frame["start_time"]).dt.total_seconds())
    frame = frame.drop(columns=["tags.mlflow.runName"], errors="ignore")
    frame = frame[[c for c in _BASE if c in frame] + [c for c in frame if c not in _BASE]]
    return frame.rename(columns=sql_columns(list(frame.columns)))


def query_runs(sql: str, experiment: str | None = None) -> pd.DataFrame:
    """Run DuckDB ``sql`` over the view ``runs`` of tracked runs.

    Args:
        sql: A query, e.g. ``"select run_name, val_dice from runs order by val_dice desc"``.
        experiment: Only this experiment's runs; ``None`` for all.

    Returns:
        The result as a pandas frame.

    Raises:
        MinivessError: Bad SQL (DuckDB's message, one line) or an unknown experiment.

    Example:
        >>> query_runs("select count(*) as n from runs where status = 'FINISHED'")  # doctest: +SKIP
    """
    import duckdb

    frame = runs_frame(experiment)
    with duckdb.connect() as con:
        con.register(VIEW, frame)
        try:
            return con.execute(sql).df()
        except duckdb.Error as exc:
            message = " ".join(str(exc).split())
            raise MinivessError(f"SQL error: {message}") from None


def leaderboard(
    metric: str = "val_dice", experiment: str | None = None, limit: int = 20
) -> pd.DataFrame:
    """The best runs by ``metric`` (higher is better), with their other validation metrics.

    Args:
        metric: SQL name of the metric to rank by (see the module doc).
        experiment: Only this experiment's runs; ``None`` for all.
        limit: Rows to return.

    Returns:
        Columns ``run_name``, ``metric``, the other ``val_*`` metrics, ``param_model_name``
        (when logged), ``experiment``, ``status``, ``start_time`` and ``run_id``.

    Raises:
        MinivessError: No run logged ``metric``; the message lists the metrics there are.
    """
    frame = runs_frame(experiment)
    if frame.empty:
        return frame
    names = [str(column) for column in frame.columns]
    if metric not in names:
        known = ", ".join(c for c in names if c.startswith(("val_", "best_", "train_"))) or "none"
        raise MinivessError(f"no run logged the metric {metric!r}; rank by one of: {known}")
    others = sorted(c for c in names if c.startswith("val_") and c != metric)
    context = ["param_model_name", "experiment", "status", "start_time", "run_id"]
    columns = ["run_name", metric, *others] + [c for c in context if c in names]
    ranked = frame.sort_values(metric, ascending=False, na_position="last", kind="stable")
    return ranked[columns].head(limit).reset_index(drop=True)
