"""Data pipeline: samples/s of the training loader with and without the memory cache.

Each loader is built and iterated for two epochs in this process, with no model attached, so
the figures are loading plus augmentation only. One training step's compute on a batch that is
already in memory is timed alongside, to tell whether the loader or the model bounds a step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from benchmarks.common import load_average, summary, time_repeats

CACHES = ("memory", "none")


def loader_epochs(data_cfg: Any, cache: str, epochs: int = 2) -> tuple[dict[str, Any], Any]:
    """Build time and per-epoch samples/s of the training loader with ``cache``, and a batch."""
    from minivess.data.datasets import build_loaders

    cfg = data_cfg.model_copy(update={"cache": cache})
    start = time.perf_counter()
    train, _ = build_loaders(cfg, batch_size=1, seed=0)
    report: dict[str, Any] = {"build_seconds": time.perf_counter() - start, "epochs": []}
    first = None
    for _ in range(epochs):
        samples, batches = 0, 0
        start = time.perf_counter()
        for batch in train:
            first = first or batch
            samples += batch["image"].shape[0]
            batches += 1
        seconds = time.perf_counter() - start
        report["epochs"].append(
            {
                "samples": samples,
                "seconds": seconds,
                "samples_per_s": samples / seconds,
                "seconds_per_batch": seconds / batches,
            }
        )
    report["load_average"] = load_average()
    return report, first


def step_compute(
    batch: Mapping[str, torch.Tensor], model_params: Mapping[str, Any], repeats: int
) -> dict[str, Any]:
    """Seconds of one training step (forward, DiceCE, backward, AdamW) on an in-memory batch.

    Runs as the engine does: the precision it resolves for the quick profile (bf16 where
    native), on plain tensors (the loader's ``MetaTensor`` s stripped).
    """
    from monai.losses import DiceCELoss

    from minivess.adapters import build_adapter, resolve_precision
    from minivess.training.engine import plain_tensor

    torch.manual_seed(0)
    adapter = build_adapter("segresnet", model_params)
    precision = resolve_precision("bf16", torch.device("cpu"), bf16_on_cpu=adapter.bf16_on_cpu)
    network = adapter.network.train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    image, label = plain_tensor(batch["image"]), plain_tensor(batch["label"])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
            logits = network(image)
        loss_fn(logits.float(), label).backward()
        optimizer.step()

    step()  # warm-up
    return {"precision": precision, "seconds": summary(time_repeats(step, repeats))}


def run(
    data_cfg: Any,
    *,
    epochs: int = 2,
    step_repeats: int = 3,
    model_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Loader figures per cache mode and the compute time of one step, for comparison.

    Args:
        data_cfg: The quick profile's :class:`~minivess.config.data.DataConfig`.
        epochs: Epochs iterated per loader.
        step_repeats: Timed training steps (after one warm-up).
        model_params: SegResNet parameters (default ``{"init_filters": 16}``).

    Returns:
        ``{"loaders": {cache: ...}, "step": ..., "patches_per_batch": ...}``.
    """
    report: dict[str, Any] = {"loaders": {}}
    for cache in CACHES:
        report["loaders"][cache], batch = loader_epochs(data_cfg, cache, epochs)
    report["patches_per_batch"] = int(batch["image"].shape[0])
    params = dict(model_params or {"init_filters": 16})
    report["step"] = step_compute(batch, params, step_repeats)
    return report
