"""Exploration of CPU training-step variants (compute only, one thread, batch in memory).

Each variant runs in its own fresh worker process with ``torch.set_num_threads(1)`` and times
``--steps`` optimizer steps (SegResNet(16), DiceCE, AdamW, 2 patches of 96x96x16 drawn once from
a real VesselNN volume) after 2 warm-up steps, in process CPU seconds and wall seconds.

A variant is ``precision:layout:optimizer`` with precision ``fp32`` or ``bf16`` (autocast),
layout ``nc`` or ``cl`` (``channels_last_3d`` weights and input) and optimizer ``loop``
(AdamW's default on CPU), ``foreach`` or ``fused``.

Run: ``python -m benchmarks.explore_train_step --variants fp32:nc:loop bf16:cl:fused``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from benchmarks.common import REPO_ROOT, load_average, vesselnn_dir


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 96x96x16 patches of the real volume and a thresholded stand-in label."""
    from benchmarks.inference import load_volume

    image = torch.from_numpy(load_volume(vesselnn_dir(), None, 256))
    patches = torch.stack([image[:, :96, :96, :16], image[:, 96:192, 96:192, 4:20]])
    label = (patches > patches.mean()).long()
    return patches.contiguous(), label


def worker(name: str, steps: int) -> dict:
    """Time ``steps`` optimizer steps of variant ``name``."""
    from monai.losses import DiceCELoss

    from minivess.adapters import build_adapter

    torch.set_num_threads(1)
    precision, layout, optimizer_kind = name.split(":")
    torch.manual_seed(0)
    network = build_adapter("segresnet", {"init_filters": 16}).network.train()
    image, label = _batch()
    if layout == "cl":
        network.to(memory_format=torch.channels_last_3d)
        image = image.contiguous(memory_format=torch.channels_last_3d)
    kwargs = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(optimizer_kind, {})
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3, **kwargs)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = network(image)
        loss = loss_fn(logits.float(), label)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(2):
        step()
    cpu, wall, losses = [], [], []
    for _ in range(steps):
        c, w = _cpu_seconds(), time.perf_counter()
        losses.append(step())
        cpu.append(_cpu_seconds() - c)
        wall.append(time.perf_counter() - w)
    return {"variant": name, "cpu": cpu, "wall": wall, "losses": losses, "load": load_average()}


def main() -> None:
    """Parent (``--variants``) or worker (``--worker``) entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker")
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    for round_ in range(args.rounds):
        for name in args.variants:
            command = [sys.executable, "-m", "benchmarks.explore_train_step", "--worker", name]
            command += ["--steps", str(args.steps)]
            out = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
            row = json.loads(out.stdout.decode().strip().splitlines()[-1])
            cpu, wall = float(np.median(row["cpu"])), float(np.median(row["wall"]))
            print(
                json.dumps(
                    {
                        "round": round_,
                        "variant": name,
                        "cpu_s": cpu,
                        "wall_s": wall,
                        "patches_per_cpu_s": 2 / cpu,
                        "final_loss": row["losses"][-1],
                        "load": row["load"],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
