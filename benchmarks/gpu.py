"""GPU figures: AMP speed-up, training throughput, inference time and peak GPU memory.

Standalone on purpose (torch and MONAI only, no minivess import), so it runs on a bare GPU
machine with just those two packages. Both adapters' networks are built exactly as the
``full`` profile builds them (SegResNet init 16; SwinUNETR feature size 12 with gradient
checkpointing), with random weights and random inputs: speed and memory do not depend on the
weights. Each configuration runs fp32, bf16 autocast and fp16 autocast + GradScaler side by side
in the same process; the report gives the median of the repeats and the speed-up over fp32.

Usage::

    python benchmarks/gpu.py --out gpu.json   # then paste the Markdown it prints into docs/
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import SegResNet, SwinUNETR

PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_CASES = {
    # name: (builder, patch, batch)
    "segresnet": ("segresnet", (128, 128, 32), 8),
    "swinunetr": ("swinunetr", (96, 96, 32), 4),
}
INFER_SHAPES = ((512, 512, 25), (512, 512, 110))


def build(name: str) -> torch.nn.Module:
    """The network of an adapter, as the ``full`` profile configures it."""
    if name == "segresnet":
        return SegResNet(
            spatial_dims=3,
            init_filters=16,
            in_channels=1,
            out_channels=2,
            norm=("GROUP", {"num_groups": 8}),
            blocks_down=(1, 2, 2, 4),
            blocks_up=(1, 1, 1),
        )
    return SwinUNETR(
        in_channels=1, out_channels=2, feature_size=12, spatial_dims=3, use_checkpoint=True
    )


def _dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _timed(fn: Callable[[], None], warmup: int, iters: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        seconds.append((time.perf_counter() - start) / iters)
    return seconds


def train_case(name: str, precision: str, repeats: int) -> dict[str, Any]:
    """Seconds per optimiser step, patches/s and peak memory of one training configuration."""
    _, patch, batch = TRAIN_CASES[name]
    torch.manual_seed(0)
    net = build(name).cuda().to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = _dtype(precision)
    x = torch.rand(batch, 1, *patch, device="cuda").to(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, 1, *patch, device="cuda") > 0.8).float()

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    torch.cuda.reset_peak_memory_stats()
    seconds = _timed(step, warmup=5, iters=10, repeats=repeats)
    median = statistics.median(seconds)
    return {
        "task": "train",
        "model": name,
        "precision": precision,
        "patch": list(patch),
        "batch": batch,
        "step_s": median,
        "spread_s": [min(seconds), max(seconds)],
        "patches_per_s": batch / median,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def infer_case(name: str, precision: str, shape: tuple[int, int, int], repeats: int) -> dict:
    """Sliding-window inference of one whole volume (window = the training patch)."""
    _, patch, _ = TRAIN_CASES[name]
    torch.manual_seed(0)
    net = build(name).cuda().eval().to(memory_format=torch.channels_last_3d)
    dtype = _dtype(precision)
    volume = torch.rand(1, 1, *shape, device="cuda")

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            sliding_window_inference(volume, patch, 8, net, overlap=0.25, mode="gaussian")

    torch.cuda.reset_peak_memory_stats()
    seconds = _timed(run, warmup=1, iters=1, repeats=repeats)
    return {
        "task": "infer",
        "model": name,
        "precision": precision,
        "shape": list(shape),
        "seconds": statistics.median(seconds),
        "spread_s": [min(seconds), max(seconds)],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/benchmarks.md from what :func:`main` saved."""
    rows = result["rows"]
    base = {
        (r["task"], r["model"], tuple(r.get("shape", ()))): r
        for r in rows
        if r["precision"] == "fp32"
    }
    lines = [
        f"GPU: {result['device']}, torch {result['torch']}, CUDA {result['cuda']}.",
        "",
        "| model | precision | patch x batch | step (s) | patches/s | speed-up vs fp32 "
        "| peak GPU GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["task"] != "train":
            continue
        ref = base[("train", r["model"], ())]
        lines.append(
            f"| {r['model']} | {r['precision']} | {'x'.join(map(str, r['patch']))} x "
            f"{r['batch']} | {r['step_s']:.4f} | {r['patches_per_s']:.1f} | "
            f"{ref['step_s'] / r['step_s']:.2f}x | {r['peak_gib']:.2f} |"
        )
    lines += [
        "",
        "| model | precision | volume | seconds | speed-up vs fp32 | peak GPU GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["task"] != "infer":
            continue
        ref = base[("infer", r["model"], tuple(r["shape"]))]
        lines.append(
            f"| {r['model']} | {r['precision']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['seconds']:.3f} | {ref['seconds'] / r['seconds']:.2f}x | {r['peak_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every case and print JSON lines and the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures GPU figures only")
    torch.backends.cudnn.benchmark = True
    device = torch.cuda.get_device_name()
    rows: list[dict[str, Any]] = []
    for name in TRAIN_CASES:
        for precision in PRECISIONS:
            rows.append(train_case(name, precision, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
        for shape in INFER_SHAPES:
            for precision in PRECISIONS:
                rows.append(infer_case(name, precision, shape, args.repeats))
                print(json.dumps(rows[-1]), flush=True)
    result = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "rows": rows,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(markdown(result))


if __name__ == "__main__":
    main()
