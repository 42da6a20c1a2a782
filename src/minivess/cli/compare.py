"""``minivess compare``: compare configurations (runs or experiments) volume by volume."""

from __future__ import annotations

from pathlib import Path

import typer

from minivess.cli.console import console


def _parse(spec: str) -> tuple[str | None, list[str]]:
    """``LABEL=ID[,ID...]`` or ``ID[,ID...]`` -> (label or None, run ids)."""
    label, _, ids = spec.rpartition("=")
    return (label or None), [i for i in ids.split(",") if i]


def compare(
    configurations: list[str] = typer.Argument(
        None,
        help="One per configuration: [bold]LABEL=RUN_ID[,RUN_ID...][/] or RUN_ID; a parent run "
        "(minivess experiment) stands for its children.",
        show_default=False,
    ),
    sql: str = typer.Option(
        None,
        "--sql",
        help="Instead: SQL over `minivess runs` returning run_id and config (the label) columns.",
    ),
    experiment: str = typer.Option(
        None, "--experiment", "-e", help="MLflow experiment for --sql and for the report run."
    ),
    metrics: str = typer.Option(
        "dice,cldice,nsd,hd95", "--metrics", help="Comma-separated metrics to compare."
    ),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="Report folder."),
    no_tracking: bool = typer.Option(
        False, "--no-tracking", help="Do not log the report to a new MLflow run."
    ),
    n_boot: int = typer.Option(10_000, "--n-boot", min=1, help="Bootstrap resamples."),
) -> None:
    """Means with 95% bootstrap intervals and paired tests against the first configuration."""
    from minivess.errors import ConfigError
    from minivess.experiments.compare import (
        compare_configurations,
        configurations_from_sql,
        load_configuration,
    )
    from minivess.experiments.report import log_report, write_report

    if bool(sql) == bool(configurations):
        raise ConfigError("give either configurations (run ids) or --sql, not both or neither")
    specs = (
        configurations_from_sql(sql, experiment)
        if sql
        else [(label or ids[0][:8], ids) for label, ids in map(_parse, configurations)]
    )
    loaded = [load_configuration(label, ids) for label, ids in specs]
    names = [m for m in metrics.split(",") if m]
    table = compare_configurations(loaded, names, n_boot=n_boot)
    files = write_report(loaded, table, out)
    for config in loaded:
        console.print(f"{config.label}: {len(config.run_ids)} run(s)", highlight=False)
    shown = table[["metric", "configuration", "mean", "ci_low", "ci_high"]]
    extra = [c for c in ("p_value", "rank_biserial", "verdict") if c in table]
    console.print((table[[*shown.columns, *extra]]).to_string(index=False), highlight=False)
    console.print(
        f"[green]report[/] {out / 'report.md'} and {out / 'report.html'}", highlight=False
    )
    if not no_tracking:
        run_id = log_report(out, files, loaded, experiment=experiment)
        console.print(f"logged to MLflow run {run_id}", highlight=False)
