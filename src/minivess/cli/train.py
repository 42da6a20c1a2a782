"""``minivess train``: compose an experiment from presets and overrides, then train it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from minivess.cli.console import console
from minivess.config.experiment import ExperimentConfig

OVERRIDES_HELP = (
    "Hydra overrides, e.g. [bold]model=swinunetr training.max_epochs=3[/] or, with -m, "
    "[bold]training.seed=0,1,2[/]. Presets: profile=quick|full, model=segresnet|swinunetr."
)


def _ensure_prepared(cfg: ExperimentConfig) -> None:
    """Prepare the default VesselNN dataset on first use, so one command trains from scratch."""
    from minivess.config.settings import get_settings

    dataset = Path(cfg.data.dataset_dir)
    if (dataset / "dataset.json").is_file():
        return
    settings = get_settings()
    if dataset.resolve() != (settings.data.root / "vesselnn").resolve():
        return  # not the default dataset: the data layer reports what is missing
    from minivess.data.prepare import prepare_dataset
    from minivess.data.splits import save_splits, splits_for_prepared

    source = settings.data.vesselnn_dir
    console.print(f"[cyan]preparing[/] VesselNN from {source} -> {dataset}", highlight=False)
    prepared = prepare_dataset(source, dataset, source="vesselnn")
    save_splits(splits_for_prepared(prepared.out, k=3, seed=42), Path(cfg.data.splits_file))


def run_job(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    resume_from: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Train one experiment into ``run_dir`` with a progress bar; returns a summary dict."""
    from minivess.training.engine import Handler
    from minivess.training.handlers.profiling import TorchProfiler
    from minivess.training.handlers.progress import ProgressBar
    from minivess.training.recipe import train

    _ensure_prepared(cfg)
    handlers: list[Handler] = [ProgressBar(console)]
    if profile:
        handlers.append(TorchProfiler(run_dir / "profile"))
    result = train(cfg, run_dir, resume_from=resume_from, handlers=tuple(handlers))
    state = result.state
    summary = {
        "run_dir": str(result.run_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "epochs": state.epoch,
        "steps": state.iteration,
        "train_minutes": round(state.elapsed_s / 60, 2),
        "best_val_dice": state.best_metric,
        "best_epoch": state.best_epoch,
        "stop_reason": state.stop_reason,
    }
    console.print(
        f"[green]trained[/] {cfg.model.name} for {state.epoch} epochs ({state.iteration} steps, "
        f"{summary['train_minutes']} min, {state.stop_reason}); best val dice "
        f"{state.best_metric if state.best_metric is None else round(state.best_metric, 4)} "
        f"at epoch {state.best_epoch}\n  checkpoint {result.best_checkpoint}",
        highlight=False,
    )
    return summary


def _resume_target(resume: Path) -> tuple[Path, Path]:
    """(run folder, last checkpoint) for a ``--resume`` given as a run folder or a ``.pt``."""
    from minivess.errors import ConfigError

    checkpoint = resume if resume.suffix == ".pt" else resume / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"--resume: no checkpoint at {checkpoint}; pass a run folder or a .pt")
    return checkpoint.parent.parent, checkpoint


def train_command(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    multirun: bool = typer.Option(
        False, "--multirun", "-m", help="Sweep every combination of comma-separated values."
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue a killed run: its folder or its last.pt."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go."),
    profile: bool = typer.Option(
        False, "--profile", help="Trace a few steps with torch.profiler into <run>/profile."
    ),
) -> None:
    """Train a model: [bold]minivess train[/] runs the quick SegResNet profile on VesselNN."""
    from minivess.config.experiment import compose, job_output_dir, launch_experiment

    if resume is not None:
        run_dir, checkpoint = _resume_target(resume)
        cfg = ExperimentConfig.model_validate_json((run_dir / "config.json").read_text())
        run_job(cfg, run_dir, resume_from=checkpoint, profile=profile)
        return
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if not multirun:
        cfg = compose(overrides or [])
        run_job(cfg, runs_dir / cfg.name / stamp, profile=profile)
        return
    results = launch_experiment(
        lambda cfg: run_job(cfg, job_output_dir(), profile=profile),
        overrides or [],
        output_dir=runs_dir / "sweeps" / stamp,
        multirun=True,
    )
    console.print(f"[green]sweep finished[/]: {len(results)} runs in {runs_dir / 'sweeps' / stamp}")
