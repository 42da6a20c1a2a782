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
    Console().print(results_table(result))
    logged = f", logged to MLflow run {run_id}" if run_id else ""
    console.print(f"[green]wrote[/] {len(files)} files to {target}{logged}", highlight=False)


def results_table(result: EvaluationResult) -> Table:
    """Per-volume metrics, then the mean and the 95% interval of each, as a rich table."""
    from minivess.evaluation import METRICS
    from minivess.evaluation.figures import METRIC_UNITS

    confidence = round(100 * float(result.settings["confidence"]))
    table = Table(title=f"{len(result.per_volume)} volumes", show_footer=False)
    table.add_column("id")
    for name in METRICS:
        unit = METRIC_UNITS.get(name)
        table.add_column(f"{name} ({unit})" if unit else name, justify="right")
    table.add_column("s", justify="right")
    for values in result.per_volume.to_dict("records"):
        cells = [_number(values[name]) for name in METRICS]
        table.add_row(str(values["id"]), *cells, f"{values['seconds']:.1f}")
    table.add_section()
    table.add_row("mean", *(_number(result.summary[n].mean) for n in METRICS), "", style="bold")
    table.add_row(
        f"{confidence}% CI",
        *(_interval(result.summary[n].ci_low, result.summary[n].ci_high) for n in METRICS),
        "",
    )
    return table


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _interval(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"{low:.3f}-{high:.3f}"
