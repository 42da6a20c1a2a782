"""Assemble a training run from an :class:`ExperimentConfig`: data, adapter, loop and handlers.

This is the only module that knows every piece; each piece knows nothing of the others.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from minivess.adapters import ModelAdapter, build_adapter, resolve_precision
from minivess.config.experiment import ExperimentConfig
from minivess.data.datasets import build_loaders, read_dataset_version
from minivess.training.distributed import (
    DistContext,
    SyncStop,
    init_distributed,
    shutdown_distributed,
)
from minivess.training.engine import Handler, Trainer, TrainState
from minivess.training.handlers.checkpoint import Checkpointer, resume
from minivess.training.handlers.early_stopping import EarlyStopping, TimeLimit
from minivess.training.handlers.profiling import MemoryMonitor
from minivess.training.handlers.telemetry import TelemetryHandler
from minivess.training.losses import LOSS_BUILDERS
from minivess.training.optim import build_optimizer, build_scheduler
from minivess.training.preflight import check_free_space, check_writable, checkpoint_budget
from minivess.training.validation import WholeVolumeValidator, validation_volumes

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"


@dataclass
class TrainResult:
    """What a finished run leaves behind.

    Args:
        run_dir: Folder with ``config.json`` and ``checkpoints/{last,best}.pt``.
        state: Final loop state (history, best metric, stop reason).
        data_version: Version of the prepared dataset trained on.
        tracking: Whatever the tracking handler reported (run id, model version), if enabled.
    """

    run_dir: Path
    state: TrainState
    data_version: str
    tracking: dict[str, Any] = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint of the best validation epoch (falls back to the last one)."""
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        return best if best.is_file() else self.run_dir / CHECKPOINT_DIR / "last.pt"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _epoch_seeder(loader: Any, seed: int, rank: int = 0) -> Callable[[int], None]:
    """Make data order and augmentation of epoch ``e`` a pure function of ``(seed, e, rank)``."""
    from monai.data.utils import set_rnd

    def reseed(epoch: int) -> None:
        epoch_seed = (seed * 1_000_003 + epoch) % 2**31
        seed_everything(epoch_seed + rank)
        loader.generator.manual_seed(epoch_seed + rank)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        set_rnd(loader.dataset, epoch_seed + rank)

    return reseed


def checkpoint_extras(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a checkpoint needs beyond weights to predict on its own: preprocessing and window."""
    lower, upper = cfg.data.intensity_percentiles
    preprocessing: dict[str, Any] = {
        "percentile_lower": float(lower),
        "percentile_upper": float(upper),
    }
    if cfg.data.target_spacing_um is not None:
        preprocessing["target_spacing_um"] = list(cfg.data.target_spacing_um)
    return {
        "preprocessing": preprocessing,
        "inference": cfg.inference.model_dump(mode="json"),
        "experiment": cfg.model_dump_json(),
    }


def build_trainer(
    cfg: ExperimentConfig, adapter: ModelAdapter | None = None
) -> tuple[Trainer, DistContext]:
    """The loop for ``cfg`` with data, optimizer, scheduler, loss and validation, no handlers.

    Under ``torchrun`` this joins the process group, shards the data and wraps the network in
    ``DistributedDataParallel``.
    """
    tcfg = cfg.training
    seed_everything(tcfg.seed, deterministic=tcfg.deterministic)
    ctx, device = init_distributed(resolve_device(tcfg.device))
    adapter = adapter or build_adapter(cfg.model.name, cfg.model.params)
    adapter.network.to(device)
    precision = resolve_precision(tcfg.precision, device, bf16_on_cpu=adapter.bf16_on_cpu)
    train_loader, val_loader = build_loaders(
        cfg.data, tcfg.batch_size, seed=tcfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    steps_per_epoch = max(1, -(-len(train_loader) // tcfg.grad_accumulation_steps))
    optimizer = build_optimizer(
        tcfg.optimizer.name,
        adapter.network.parameters(),
        lr=tcfg.optimizer.lr,
        weight_decay=tcfg.optimizer.weight_decay,
        momentum=tcfg.optimizer.momentum or 0.0,
    )
    sched = tcfg.scheduler
    scheduler = build_scheduler(
        sched.name,
        optimizer,
        total_steps=steps_per_epoch * tcfg.max_epochs,
        warmup_steps=steps_per_epoch * sched.warmup_epochs,
        min_lr=sched.min_lr,
        plateau_patience=sched.patience or 5,
        plateau_factor=sched.factor or 0.5,
    )
    validator = WholeVolumeValidator(
        validation_volumes(val_loader),
        roi_size=cfg.inference.roi_size,
        overlap=cfg.inference.overlap,
        sw_batch_size=cfg.inference.sw_batch_size,
        precision=cfg.inference.precision,
        blend=cfg.inference.blend,
        target_spacing_um=cfg.data.target_spacing_um,
    )
    trainer = Trainer(
        adapter,
        optimizer,
        _loss(cfg),
        train_loader,
        max_epochs=tcfg.max_epochs,
        scheduler=scheduler,
        validator=validator,
        monitor="dice",
        val_every=tcfg.val_every_n_epochs,
        precision=precision,
        grad_accumulation_steps=tcfg.grad_accumulation_steps,
        device=device,
        epoch_seed=_epoch_seeder(train_loader, tcfg.seed, ctx.rank),
    )
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        trainer.forward = DistributedDataParallel(adapter.network, device_ids=ids)
    return trainer, ctx


def _loss(cfg: ExperimentConfig) -> torch.nn.Module:
    loss = cfg.training.loss
    if loss.name == "cldice":
        return LOSS_BUILDERS["cldice"](
            alpha=loss.cldice_alpha or 0.5, iterations=loss.skeleton_iterations or 3
        )
    return LOSS_BUILDERS[loss.name]()


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    handlers: tuple[Handler, ...] = (),
    checkpoint_extra: Callable[[], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir``; a killed run continues with ``resume_from=last.pt``.

    Args:
        cfg: The validated experiment.
        run_dir: Output folder (``config.json``, ``checkpoints/``).
        resume_from: A ``last.pt`` of the same experiment to continue from.
        handlers: Extra handlers (progress bar, tracking, profiling) attached after the
            built-in checkpointing, early stopping and time limit.
        checkpoint_extra: Further plain values for every checkpoint (e.g. tracking run id).

    Returns:
        The run's result; ``best_checkpoint`` is ready for ``minivess evaluate``.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    data_version = read_dataset_version(Path(cfg.data.dataset_dir))
    trainer, ctx = build_trainer(cfg)
    if ctx.is_main:
        check_free_space(run_dir, checkpoint_budget(trainer.adapter.network))
        (run_dir / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    extras = {**checkpoint_extras(cfg), "world_size": ctx.world_size}

    def extra() -> dict[str, Any]:
        return {**extras, **(checkpoint_extra() if checkpoint_extra else {})}

    if cfg.training.early_stopping_patience:
        trainer.attach(EarlyStopping(cfg.training.early_stopping_patience))
    if cfg.training.max_time_minutes:
        trainer.attach(TimeLimit(cfg.training.max_time_minutes))
    if ctx.is_main:
        checkpoints = Checkpointer(run_dir / CHECKPOINT_DIR, data_version=data_version, extra=extra)
        trainer.attach(MemoryMonitor(), checkpoints, TelemetryHandler(), *handlers)
    if ctx.enabled:
        trainer.attach(SyncStop())
    if resume_from is not None:
        resume(trainer, resume_from)
    try:
        state = trainer.run()
    finally:
        shutdown_distributed()
    if ctx.is_main:
        (run_dir / "history.json").write_text(json.dumps(state.history, indent=1), "utf-8")
    return TrainResult(run_dir=run_dir, state=state, data_version=data_version)
