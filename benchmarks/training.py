"""Training throughput: the project's engine vs a plain MONAI-tutorial PyTorch loop.

Both loops draw from the same loader (the engine's, memory cache already filled) and train a
freshly built SegResNet on the same patches. The engine runs with the quick profile's
precision (bf16 autocast where the CPU has it); the plain loop is eager fp32 with DiceCE and
AdamW, as the MONAI tutorials write it. Time per step includes loading and augmentation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from benchmarks.common import load_average, monai_segresnet, summary

MIN_EPOCHS = 3
"""The quick profile warms the learning rate up over 2 epochs, and needs more epochs than that."""


def experiment(
    dataset_dir: Path,
    splits_file: Path,
    *,
    max_epochs: int,
    patch_size: tuple[int, int, int] = (96, 96, 16),
    model_params: Mapping[str, Any] | None = None,
) -> Any:
    """The quick-profile experiment on ``dataset_dir`` (validation pushed past the end)."""
    from minivess.config.experiment import compose

    patch = json.dumps(list(patch_size)).replace(" ", "")
    overrides = [
        f"data.dataset_dir={dataset_dir}",
        f"data.splits_file={splits_file}",
        f"data.patch_size={patch}",
        f"inference.roi_size={patch}",
        f"training.max_epochs={max_epochs}",
        f"training.val_every_n_epochs={max_epochs}",
    ]
    for key, value in (model_params or {}).items():
        overrides.append(f"model.params.{key}={json.dumps(value).replace(' ', '')}")
    return compose(overrides)


def _step_times(stamps: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True)]


def engine_steps(cfg: Any, total: int) -> tuple[list[float], Iterable[Any], str]:
    """Timestamps of the engine's first ``total`` optimizer steps, its loader and precision."""
    from minivess.training.events import Event
    from minivess.training.recipe import build_trainer

    trainer, _ = build_trainer(cfg)
    trainer.validator = None  # throughput only; validation is a separate cost
    stamps: list[float] = []

    def mark(t: Any) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) > total:  # stamps[0] is the start of the first epoch
            t.state.should_stop = True

    trainer.on(Event.ITERATION_COMPLETED, mark)
    trainer.on(Event.EPOCH_STARTED, lambda _t: stamps or stamps.append(time.perf_counter()))
    trainer.run()
    return stamps[: total + 1], trainer.train_loader, trainer.precision


def plain_step(network: torch.nn.Module) -> Callable[[Any], None]:
    """One step of the plain fp32 loop on ``network`` (put in train mode): DiceCE, AdamW 2e-3."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3)
    network.train()

    def step(batch: Any) -> None:
        optimizer.zero_grad()
        loss_fn(network(batch["image"]), batch["label"]).backward()
        optimizer.step()

    return step


def plain_steps(loader: Iterable[Any], model_params: Mapping[str, Any], total: int) -> list[float]:
    """Timestamps of ``total`` steps of a plain fp32 loop: SegResNet, DiceCE, AdamW."""
    from minivess.adapters import build_adapter

    torch.manual_seed(0)
    step = plain_step(monai_segresnet(build_adapter("segresnet", model_params)))
    stamps = [time.perf_counter()]
    while len(stamps) <= total:
        for batch in loader:
            step(batch)
            stamps.append(time.perf_counter())
            if len(stamps) > total:
                break
    return stamps


def run(
    dataset_dir: Path,
    splits_file: Path,
    *,
    steps: int = 20,
    warmup: int = 3,
    patch_size: tuple[int, int, int] = (96, 96, 16),
    model_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Patches/s of both loops over ``steps`` steps after ``warmup`` untimed ones.

    Args:
        dataset_dir: A prepared dataset.
        splits_file: Its splits (fold 0 is used).
        steps: Timed optimizer steps per loop.
        warmup: Steps run first and not timed (allocator, caches, first autocast).
        patch_size: Training patch (H, W, D).
        model_params: SegResNet parameters (default ``{"init_filters": 16}``).

    Returns:
        Per loop: precision, patches/s, step seconds (median, min, max); and the ratio.
    """
    from minivess.data.datasets import fold_items

    params = dict(model_params or {"init_filters": 16})
    total = warmup + steps
    cfg = experiment(
        dataset_dir, splits_file, max_epochs=MIN_EPOCHS, patch_size=patch_size, model_params=params
    )
    per_epoch = max(1, len(fold_items(cfg.data)[0]) // cfg.training.batch_size)
    epochs = max(MIN_EPOCHS, -(-total // per_epoch))
    training = cfg.training.model_copy(update={"max_epochs": epochs, "val_every_n_epochs": epochs})
    cfg = cfg.model_copy(update={"training": training})
    patches = cfg.training.batch_size * cfg.data.samples_per_volume
    engine_stamps, loader, precision = engine_steps(cfg, total)
    load_engine = load_average()
    plain_stamps = plain_steps(loader, params, total)
    report: dict[str, Any] = {"patches_per_step": patches, "steps": steps, "warmup": warmup}
    for name, stamps, prec, load in (
        ("project", engine_stamps, precision, load_engine),
        ("baseline", plain_stamps, "fp32", load_average()),
    ):
        seconds = _step_times(stamps, warmup + 1)
        report[name] = {
            "precision": prec,
            "patches_per_s": patches * len(seconds) / sum(seconds),
            "step_seconds": summary(seconds),
            "load_average": load,
        }
    report["ratio"] = report["project"]["patches_per_s"] / report["baseline"]["patches_per_s"]
    return report


def _train_for(seconds: float, step: Callable[[Any], None], loader: Iterable[Any]) -> int:
    """Run ``step`` over ``loader`` (epoch after epoch) until ``seconds`` have passed."""
    steps, start = 0, time.perf_counter()
    while True:
        for batch in loader:
            step(batch)
            steps += 1
            if time.perf_counter() - start >= seconds:
                return steps


def dice_at_equal_time(
    dataset_dir: Path,
    splits_file: Path,
    *,
    minutes: float,
    patch_size: tuple[int, int, int] = (96, 96, 16),
    model_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validation Dice of both loops after ``minutes`` of training each, one after the other.

    The project trains with ``minivess train``'s engine, stopped once ``minutes`` have passed
    (as ``training.max_time_minutes`` stops it; its warm-up cosine schedule is set for the
    quick profile's full 13 minutes, so it is cut before its learning rate has decayed). The
    plain loop trains MONAI's SegResNet in fp32 at AdamW's constant lr 2e-3 on the same loader
    for the same time. Both models are then scored by the same whole-volume validator (the
    fold's validation volumes, the project's inference settings), so only training differs.

    Returns:
        Per loop: steps, patches, Dice and IoU (mean and per volume); the Dice difference.
    """
    from minivess.adapters import build_adapter
    from minivess.training.events import Event
    from minivess.training.recipe import build_trainer

    params = dict(model_params or {"init_filters": 16})
    cfg = experiment(
        dataset_dir, splits_file, max_epochs=180, patch_size=patch_size, model_params=params
    )
    trainer, _ = build_trainer(cfg)
    validator, trainer.validator = trainer.validator, None
    assert validator is not None
    budget = minutes * 60.0
    started: list[float] = []

    def stop_on_time(t: Any) -> None:
        if time.perf_counter() - started[0] >= budget:
            t.state.should_stop = True

    trainer.on(Event.EPOCH_STARTED, lambda _t: started or started.append(time.perf_counter()))
    trainer.on(Event.ITERATION_COMPLETED, stop_on_time)
    state = trainer.run()
    project_seconds = time.perf_counter() - started[0]
    report: dict[str, Any] = {
        "minutes": minutes,
        "patches_per_step": cfg.training.batch_size * cfg.data.samples_per_volume,
    }
    report["project"] = {
        "precision": trainer.precision,
        "steps": state.iteration,
        "seconds": project_seconds,
        **_scores(validator, trainer.adapter),
    }

    torch.manual_seed(cfg.training.seed)
    plain = build_adapter("segresnet", params)
    network = monai_segresnet(plain)
    step = plain_step(network)
    start = time.perf_counter()
    steps = _train_for(budget, step, trainer.train_loader)
    plain_seconds = time.perf_counter() - start
    plain.network.load_state_dict(network.state_dict())  # scored by the same validator
    report["baseline"] = {
        "precision": "fp32",
        "steps": steps,
        "seconds": plain_seconds,
        **_scores(validator, plain),
    }
    report["dice_difference"] = report["project"]["dice"] - report["baseline"]["dice"]
    return report


def _scores(validator: Any, adapter: Any) -> dict[str, Any]:
    adapter.network.eval()
    metrics = validator(adapter)
    return {"dice": metrics["dice"], "iou": metrics["iou"], "per_volume": validator.last_per_volume}
