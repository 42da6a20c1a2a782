"""``minivess train``: compose an experiment from presets and overrides, then train it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minivess.cli.console import console

if TYPE_CHECKING:
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
    tracking: bool = True,
    tags: dict[str, str] | None = None,
    artifacts: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Train one experiment into ``run_dir``, tracked in MLflow unless switched off.

    ``tags`` (e.g. ``mlflow.parentRunId``) and ``artifacts`` (e.g. the plan file the config
    started from) go to the tracked run.
    """
    import os

    from minivess.training.engine import Handler
    from minivess.training.handlers.profiling import TorchProfiler
    from minivess.training.handlers.progress import ProgressBar

    _ensure_prepared(cfg)
    handlers: list[Handler] = [ProgressBar(console)]
    if profile:
        handlers.append(TorchProfiler(run_dir / "profile"))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 tracks and reports
        result = _train(cfg, run_dir, resume_from, [], {})
        return {"rank": int(os.environ["RANK"]), "epochs": result.state.epoch}
    if not (tracking and cfg.tracking.enabled):
        result = _train(cfg, run_dir, resume_from, handlers, {})
        summary = {**_summarise(cfg, result), **_evaluate(cfg, result)}
        _write_summary(run_dir, summary)
        return summary
    from minivess.tracking import MLflowHandler, TrackedRun
    from minivess.tracking.buffer import SPOOL_DIR

    with TrackedRun(
        cfg.tracking.experiment,
        run_name=run_dir.name,
        config=cfg,
        dataset_dir=cfg.data.dataset_dir,
        resume_run_id=_run_id_of(resume_from),
        spool_dir=run_dir / SPOOL_DIR,
        tags=tags,
    ) as run:
        for artifact in artifacts:
            run.log_artifact(artifact)
        handlers.append(MLflowHandler(run))
        result = _train(cfg, run_dir, resume_from, handlers, {"run_id": run.run_id})
        summary = {**_summarise(cfg, result), **_evaluate(cfg, result, run)}
        summary["run_id"] = run.run_id
        if cfg.tracking.register_model and result.state.best_metric is not None:
            if run.buffering:
                console.print(
                    "[yellow]not registered[/]: the tracking store is unreachable; once it "
                    f"is back, sync the run (minivess runs sync {run_dir}) and log "
                    f"{result.best_checkpoint} as a model",
                    highlight=False,
                )
            else:
                summary.update(_register(cfg, result, run.run_id))
    _write_summary(run_dir, summary)
    return summary


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` in the run folder: what DVC tracks as the train stage's metrics."""
    import json

    if run_dir.is_dir():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume_from: Path | None,
    handlers: list[Any],
    extra: dict[str, Any],
) -> Any:
    from minivess.training.recipe import train

    return train(
        cfg,
        run_dir,
        resume_from=resume_from,
        handlers=tuple(handlers),
        checkpoint_extra=lambda: extra,
    )


def _evaluate(cfg: ExperimentConfig, result: Any, run: Any = None) -> dict[str, Any]:
    """All metrics of the best checkpoint on the fold's held-out volumes, saved and logged.

    Files and metrics go through the tracked ``run`` (if any), so a tracking server that is
    down keeps them in the run's spool instead of failing the command.
    """
    from minivess.evaluation import evaluate_prepared
    from minivess.evaluation.mlflow_log import artifact_dir, summary_metrics

    if not result.best_checkpoint.is_file():
        return {}
    evaluation = evaluate_prepared(
        result.best_checkpoint,
        cfg.data.dataset_dir,
        splits_file=cfg.data.splits_file,
        fold=cfg.data.fold,
        subset="val",
    )
    out = result.run_dir / "evaluation"
    written = evaluation.save(out, log=False)
    if run is not None:
        for path in written:
            run.log_artifact(path, artifact_dir(out, path))
        run.log_metrics(summary_metrics(evaluation), step=0)
    means = {f"heldout_{name}": s.mean for name, s in evaluation.summary.items()}
    table = evaluation.per_volume.set_index("id")
    lines = [
        f"  {case}: dice {row['dice']:.4f} cldice {row['cldice']:.4f} nsd {row['nsd']:.4f}"
        for case, row in table.iterrows()
    ]
    console.print(
        "held-out volumes (fold {}):\n{}\n  mean dice {:.4f}".format(
            cfg.data.fold, "\n".join(lines), means.get("heldout_dice", float("nan"))
        ),
        highlight=False,
    )
    return means


def _run_id_of(checkpoint: Path | None) -> str | None:
    """The tracking run a checkpoint belongs to, so a resumed run continues it."""
    if checkpoint is None:
        return None
    import torch

    extra = torch.load(checkpoint, weights_only=True, map_location="cpu").get("extra", {})
    return extra.get("run_id")


def _register(cfg: ExperimentConfig, result: Any, run_id: str) -> dict[str, Any]:
    """Log the best checkpoint as the run's model, register it and maybe promote it."""
    from minivess.tracking import log_model, register_and_promote

    name = cfg.tracking.register_model
    assert name is not None
    log_model(result.best_checkpoint)
    promotion = register_and_promote(
        run_id,
        name,
        split_id=f"{result.data_version[:12]}:fold{cfg.data.fold}",
        metric=cfg.tracking.promotion_metric,
    )
    verdict = "[green]champion[/]" if promotion.promoted else "not promoted"
    console.print(
        f"registered {name} version {promotion.version}: {verdict} ({promotion.reason})",
        highlight=False,
    )
    return {"model_version": promotion.version, "promoted": promotion.promoted}


def _summarise(cfg: ExperimentConfig, result: Any) -> dict[str, Any]:
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
    best = "n/a" if state.best_metric is None else f"{state.best_metric:.4f}"
    console.print(
        f"[green]trained[/] {cfg.model.name} for {state.epoch} epochs ({state.iteration} steps, "
        f"{summary['train_minutes']} min, {state.stop_reason}); best val dice {best} "
        f"at epoch {state.best_epoch}\n  checkpoint {result.best_checkpoint}\n"
        f"  evaluate: minivess evaluate --model {result.best_checkpoint} "
        f"--data {cfg.data.dataset_dir} --splits {cfg.data.splits_file} --fold {cfg.data.fold}",
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


def with_plan(plan: Path | None, overrides: list[str]) -> tuple[list[str], tuple[Path, ...]]:
    """The plan's overrides before the user's (which win), and the plan file to log."""
    if plan is None:
        return overrides, ()
    from minivess.planning import Plan

    return [*Plan.load(plan).overrides(overrides), *overrides], (plan,)


def train_command(
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    multirun: bool = typer.Option(
        False, "--multirun", "-m", help="Sweep every combination of comma-separated values."
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue a killed run: its folder or its last.pt."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go."),
    run_dir: Path = typer.Option(
        None, "--run-dir", help="Exact folder of this run [default: <runs-dir>/<name>/<time>]."
    ),
    profile: bool = typer.Option(
        False, "--profile", help="Trace a few steps with torch.profiler into <run>/profile."
    ),
    no_tracking: bool = typer.Option(
        False, "--no-tracking", help="Do not log to MLflow (same as tracking.enabled=false)."
    ),
    plan: Path = typer.Option(
        None, "--plan", help="Start from a plan file (minivess plan); overrides still win."
    ),
) -> None:
    """Train a model: [bold]minivess train[/] runs the quick SegResNet profile on VesselNN."""
    from minivess.config.experiment import (
        ExperimentConfig,
        compose,
        job_output_dir,
        launch_experiment,
    )

    if resume is not None:
        run_dir, checkpoint = _resume_target(resume)
        cfg = ExperimentConfig.model_validate_json((run_dir / "config.json").read_text())
        run_job(cfg, run_dir, resume_from=checkpoint, profile=profile, tracking=not no_tracking)
        return
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    overrides, artifacts = with_plan(plan, overrides or [])
    if not multirun:
        cfg = compose(overrides)
        target = run_dir or runs_dir / cfg.name / stamp
        run_job(cfg, target, profile=profile, tracking=not no_tracking, artifacts=artifacts)
        return
    results = launch_experiment(
        lambda cfg: run_job(
            cfg, job_output_dir(), profile=profile, tracking=not no_tracking, artifacts=artifacts
        ),
        overrides,
        output_dir=runs_dir / "sweeps" / stamp,
        multirun=True,
    )
    console.print(f"[green]sweep finished[/]: {len(results)} runs in {runs_dir / 'sweeps' / stamp}")
