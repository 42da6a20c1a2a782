"""``minivess experiment``: train one config over several seeds and folds as one MLflow parent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minivess.cli.console import console
from minivess.cli.train import OVERRIDES_HELP

if TYPE_CHECKING:
    from minivess.config.experiment import ExperimentConfig

NO_REGISTRATION = "tracking.register_model=null"


def _ints(text: str, option: str) -> list[int]:
    from minivess.errors import ConfigError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"{option} takes comma-separated integers, e.g. 0,1,2; got {text!r}"
        ) from None


def experiment(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated training seeds."),
    folds: str = typer.Option("0", "--folds", help="Comma-separated folds of the splits."),
    plan: Path = typer.Option(
        None, "--plan", help="Start from a plan file (minivess plan); overrides still win."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go."),
    no_tracking: bool = typer.Option(
        False, "--no-tracking", help="Do not log to MLflow (no parent or child runs)."
    ),
) -> None:
    """Train a config for every seed x fold: an MLflow parent run with one child per job.

    The parent logs each held-out metric's mean and standard deviation over the children.
    Children are not registered as models unless you set tracking.register_model.
    """
    from minivess.cli.train import run_job, with_plan
    from minivess.config.experiment import job_output_dir
    from minivess.experiments.multirun import run_experiment

    user = list(overrides or [])
    if not any(o.startswith("tracking.register_model=") for o in user):
        user = [NO_REGISTRATION, *user]
    shared, artifacts = with_plan(plan, user)

    def task(cfg: ExperimentConfig, tags: dict[str, str]) -> dict[str, Any]:
        name = f"{cfg.name}-seed{cfg.training.seed}-fold{cfg.data.fold}"
        return run_job(
            cfg,
            job_output_dir(),
            tracking=not no_tracking,
            tags={**tags, "mlflow.runName": name} if tags else None,
            artifacts=artifacts,
        )

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    result = run_experiment(
        task,
        shared,
        seeds=_ints(seeds, "--seeds"),
        folds=_ints(folds, "--folds"),
        output_dir=runs_dir / "experiments" / stamp,
        tracking=not no_tracking,
    )
    lines = [
        f"  {key}: {stats['mean']:.4f} ± {stats['std']:.4f} (n={int(stats['n'])})"
        for key, stats in result.aggregate.items()
    ]
    parent = f"; parent run {result.parent_run_id}" if result.parent_run_id else ""
    console.print(
        f"[green]experiment finished[/]: {len(result.children)} runs in {result.output_dir}"
        f"{parent}\n" + "\n".join(lines),
        highlight=False,
    )
