"""``minivess evaluate``: score a model on a prepared dataset and write tables and figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from minivess.cli.console import console, progress_bar

if TYPE_CHECKING:
    from minivess.evaluation import EvaluationResult


def evaluate(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Checkpoint (.pt), model folder, or MLflow URI (models:/NAME@ALIAS, "
        "models:/NAME/VERSION, runs:/RUN_ID/model).",
    ),
    data: Path = typer.Option(..., "--data", "-d", help="Prepared dataset folder."),
    splits: Path = typer.Option(
        None, "--splits", help="Splits JSON [default: <data>/splits.json]."
    ),
    fold: int = typer.Option(
        None, "--fold", min=0, help="Fold the model was trained on (needed for val and train)."
    ),
    subset: str = typer.Option(
        "val", "--subset", help="val (the fold's held-out volumes), train, or all."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder [default: evaluation/<dataset folder name>]."
    ),
    run_id: str = typer.Option(
        None, "--run-id", help="MLflow run to log the table, figures and test_* metrics into."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Evaluate a model: per-volume metrics, means with 95% bootstrap CIs, figures."""
    from minivess.evaluation import evaluate_prepared
    from minivess.evaluation.mlflow_log import check_run

    if run_id is not None:
        check_run(run_id)
    target = out or Path("evaluation") / data.resolve().name
    with progress_bar("evaluate") as bar:
        task = bar.add_task("evaluate", total=None, item="")

        def report(done: int, case_id: str) -> None:
            bar.update(task, completed=done, item=case_id)

        result = evaluate_prepared(
            model,
            data,
            splits_file=splits,
            fold=fold,
            subset=subset,  # type: ignore[arg-type]  # validated by evaluate_prepared
            device=device,
            progress=report,
        )
    files = result.save(target, run_id=run_id)
    out_console = Console()
    if not out_console.is_terminal:  # a file or pipe: never truncate ids or values
        out_console = Console(width=200)
    for table in results_tables(result):
        out_console.print(table)
    logged = f", logged to MLflow run {run_id}" if run_id else ""
    console.print(f"[green]wrote[/] {len(files)} files to {target}{logged}", highlight=False)


def results_tables(result: EvaluationResult) -> tuple[Table, Table]:
    """The per-volume metrics, and per metric the mean with its bootstrap interval."""
    from minivess.evaluation import METRICS
    from minivess.evaluation.figures import METRIC_UNITS

    names = [f"{n} ({METRIC_UNITS[n]})" if n in METRIC_UNITS else n for n in METRICS]
    volumes = Table(title=f"{len(result.per_volume)} volumes")
    volumes.add_column("id", no_wrap=True)
    for name in names:
        volumes.add_column(name, justify="right")
    volumes.add_column("s", justify="right")
    for values in result.per_volume.to_dict("records"):
        cells = [_number(values[name]) for name in METRICS]
        volumes.add_row(str(values["id"]), *cells, f"{values['seconds']:.1f}")
    confidence = round(100 * float(result.settings["confidence"]))
    summary = Table(title=f"mean over volumes, {confidence}% bootstrap CI")
    for column in ("metric", "mean", f"{confidence}% CI", "n", "NaN"):
        summary.add_column(column, justify="left" if column == "metric" else "right")
    for label, name in zip(names, METRICS, strict=True):
        stats = result.summary[name]
        interval = "-" if math.isnan(stats.ci_low) else f"{stats.ci_low:.3f} - {stats.ci_high:.3f}"
        summary.add_row(label, _number(stats.mean), interval, str(stats.n), str(stats.n_nan))
    return volumes, summary


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"
