"""Training throughput: the project's engine vs a plain MONAI-tutorial PyTorch loop.

Both loops draw from the same loader (the engine's, memory cache already filled) and train a
freshly built SegResNet on the same patches. The engine runs with the quick profile's
precision (bf16 autocast where the CPU has it); the plain loop is eager fp32 with DiceCE and
AdamW, as the MONAI tutorials write it. Time per step includes loading and augmentation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from benchmarks.common import load_average, summary

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


def plain_steps(loader: Iterable[Any], model_params: Mapping[str, Any], total: int) -> list[float]:
    """Timestamps of ``total`` steps of a plain fp32 loop: SegResNet, DiceCE, AdamW."""
    from monai.losses import DiceCELoss

    from minivess.adapters import build_adapter

    torch.manual_seed(0)
    network = build_adapter("segresnet", model_params).network  # a plain monai SegResNet
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3)
    network.train()
    stamps = [time.perf_counter()]
    while len(stamps) <= total:
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(network(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
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
