"""``minivess runs``: compare tracked runs with a leaderboard or any SQL (DuckDB) over them."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from minivess.cli.console import console
from minivess.errors import MinivessError

if TYPE_CHECKING:
    import pandas as pd


class OutputFormat(StrEnum):
    """How a result is written."""

    table = "table"
    csv = "csv"
    markdown = "markdown"
    parquet = "parquet"


runs_app = typer.Typer(
    help=(
        "Compare tracked runs. Without a command: a leaderboard. `sql` runs any DuckDB query "
        "over the view `runs` (one row per run: metrics by name, param_*, tag_*)."
    ),
)

_EXPERIMENT = typer.Option(
    None, "--experiment", "-e", help="Only this MLflow experiment (default: all experiments)."
)
_FORMAT = typer.Option(OutputFormat.table, "--format", "-f", help="Output format.")
_OUT = typer.Option(
    None, "--out", "-o", help="Write to this file instead of the terminal (needed for parquet)."
)


@runs_app.callback(invoke_without_command=True)
def leaderboard(
    ctx: typer.Context,
    experiment: str = _EXPERIMENT,
    metric: str = typer.Option("val_dice", "--metric", "-m", help="Metric to rank by."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Number of runs shown."),
    fmt: OutputFormat = _FORMAT,
    out: Path = _OUT,
) -> None:
    """Best runs by a validation metric (higher is better)."""
    if ctx.invoked_subcommand is not None:
        return
    from minivess.tracking.query import leaderboard as ranked

    frame = ranked(metric=metric, experiment=experiment, limit=limit)
    if frame.empty:
        console.print("no runs tracked yet", highlight=False)
        return
    emit(frame, fmt, out, title=f"runs by {metric}")


@runs_app.command("sql")
def sql(
    query: str = typer.Argument(
        ..., help='DuckDB SQL over the view `runs`, e.g. "select run_name, val_dice from runs".'
    ),
    experiment: str = _EXPERIMENT,
    fmt: OutputFormat = _FORMAT,
    out: Path = _OUT,
) -> None:
    """Run SQL over all tracked runs (columns: see docs/tracking.md)."""
    from minivess.tracking.query import query_runs

    emit(query_runs(query, experiment=experiment), fmt, out)


@runs_app.command("sync")
def sync(
    run_dir: Path = typer.Argument(
        ..., help="A run folder (or its tracking-spool) whose tracking calls were kept locally."
    ),
    uri: str = typer.Option(
        None, "--uri", help="Tracking URI to deliver to [default: the one the run logged to]."
    ),
) -> None:
    """Deliver metrics, tags and artifacts kept while the tracking server was unreachable."""
    from minivess.tracking.buffer import sync_spool

    sent = sync_spool(run_dir, uri)
    console.print(f"[green]delivered[/] {sent} tracking records from {run_dir}", highlight=False)


def emit(frame: pd.DataFrame, fmt: OutputFormat, out: Path | None, title: str = "") -> None:
    """Print ``frame`` to stdout or write it to ``out`` (atomically) in format ``fmt``.

    Raises:
        MinivessError: ``parquet`` without ``out``.
    """
    if fmt is OutputFormat.parquet and out is None:
        raise MinivessError("--format parquet writes a binary file: add --out FILE.parquet")
    if out is None:
        if fmt is OutputFormat.table:
            Console(soft_wrap=False).print(rich_table(frame, title))
        else:
            typer.echo(render_text(frame, fmt), nl=False)
        return
    from minivess.data.io import atomic_path

    with atomic_path(out) as tmp:
        if fmt is OutputFormat.parquet:
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_text(render_text(frame, fmt), encoding="utf-8")
    console.print(f"[green]wrote[/] {len(frame)} rows to {out}", highlight=False)


def render_text(frame: pd.DataFrame, fmt: OutputFormat) -> str:
    """``frame`` as CSV, markdown, or (for a file) the plain text of the rich table."""
    if fmt is OutputFormat.csv:
        return frame.to_csv(index=False)
    if fmt is OutputFormat.markdown:
        return markdown_table(frame)
    plain = Console(width=200, color_system=None, force_terminal=False, soft_wrap=False)
    with plain.capture() as captured:
        plain.print(rich_table(frame, ""))
    return captured.get()


def rich_table(frame: pd.DataFrame, title: str) -> Table:
    """A rich table of ``frame`` with compact cells (4 significant digits, no NaN)."""
    table = Table(title=title or None, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    return table


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "strftime"):  # pandas Timestamp: to the second is enough to compare
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    text = str(value)
    return "" if text in {"NaT", "nan", "<NA>"} else text
