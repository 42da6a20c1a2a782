"""Full-volume inference: plain MONAI sliding window (eager fp32) vs the project's backends.

Paths: ``baseline`` (MONAI tutorial style, eager fp32), ``project`` (``adapter.predict_volume``,
bf16 where the CPU has it, the default ``constant`` blending, windows side by side one core
each), ``project-serial`` (the same call with one window at a time on every core, as before
``cpu_window_threads``), ``project-fp32`` (the same call
in eager fp32, so that ``project``'s agreement with it measures precision alone), ``onnx``
(ONNX Runtime on the exported graph, fp32, the same sliding window as ``project``) and
``onnx-openvino`` (the same graph and window on ONNX Runtime's OpenVINO build, overlaid by
``uv run --with``, in the precision ``auto`` resolves to: bf16 where the CPU has it).
Each path runs in its own fresh worker process (``--worker``)
on the same saved volume and checkpoint, so that its peak RSS is its own (``ru_maxrss`` is per
process) and no path inherits another's warmed allocator; the graph is exported by the parent,
outside the timing. The worker times every repeat, counts the windows the network saw, and
saves its argmax so the parent can compare the masks voxel by voxel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmarks.common import (
    REPO_ROOT,
    configure_threads,
    load_average,
    monai_segresnet,
    peak_rss_mb,
    summary,
    time_repeats,
)

from minivess.inference.runners import OPENVINO_REQUIREMENT

VOLUME = "poon2015_BBB_Leakage_BM4D_denoised.tif"
PATHS = ("baseline", "project", "project-serial", "project-fp32", "onnx", "onnx-openvino")
EAGER_FP32 = ("baseline", "project-fp32")
"""Torch paths that run in eager fp32; the others ask for ``auto``."""
OVERLAID = {"onnx-openvino": OPENVINO_REQUIREMENT}
"""Paths whose worker runs with a package uv overlays on the project's environment (the
OpenVINO build of ONNX Runtime replaces the ``onnxruntime`` module, so it cannot be installed
beside it); skipped, with the reason in the report, where uv or the package is unavailable."""


def load_volume(source: Path, depth: int | None = None, size: int | None = None) -> np.ndarray:
    """The real test volume as a normalised ``(1, H, W, D)`` float32 array.

    Args:
        source: The VesselNN folder (``denoised/`` holds the TIFF).
        depth: If larger than the stack, reflect it along Z up to this depth (MiniVess volumes
            reach Z=110; the VesselNN stacks stop at 26).
        size: If given, keep only the top-left ``size`` x ``size`` in-plane corner.

    Returns:
        The volume, normalised with the training percentiles (1, 99.8).
    """
    from minivess.data.io import read_tiff
    from minivess.data.transforms import normalise_intensity

    array = read_tiff(source / "denoised" / VOLUME).array
    if size is not None:
        array = array[:size, :size]
    if depth is not None and depth > array.shape[2]:
        array = np.pad(array, ((0, 0), (0, 0), (0, depth - array.shape[2])), mode="symmetric")
    normalised = normalise_intensity(array[None].astype(np.float32), (1.0, 99.8))
    return np.ascontiguousarray(torch.as_tensor(normalised).numpy(), dtype=np.float32)


def window_flops(checkpoint: Path, roi: Sequence[int]) -> int:
    """FLOPs of one forward pass of one window (fp32, batch 1), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from minivess.adapters import load_checkpoint

    adapter, _ = load_checkpoint(checkpoint)
    adapter.network.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        adapter.network(torch.zeros(1, adapter.in_channels, *roi))
    return int(counter.get_total_flops())


def _predict(
    path: str,
    adapter: Any,
    network: torch.nn.Module,
    image: torch.Tensor,
    roi: list[int],
    precision: str,
) -> torch.Tensor:
    """Argmax of one full-volume prediction along ``path`` (``network``: the baseline's).

    ``precision`` is what the project's call asks for; the baseline is always eager fp32.
    """
    if path == "baseline":
        from monai.inferers import sliding_window_inference

        # As a MONAI tutorial runs it: MONAI's network, eval mode, no_grad, eager fp32,
        # default blending.
        network.eval()
        with torch.no_grad():
            logits = sliding_window_inference(
                image[None], roi_size=roi, sw_batch_size=1, predictor=network, overlap=0.25
            )
        return torch.as_tensor(logits)[0].argmax(0)
    from minivess.adapters import class_mask

    probs = adapter.predict_volume(image, roi_size=roi, overlap=0.25, precision=precision)
    return class_mask(probs)  # as the Predictor makes its mask


def _onnx_predict(args: argparse.Namespace, windows: list[int], figures: dict) -> Any:
    """An ``onnx`` path: the graph's runner with the project's window, image -> mask.

    ``onnx`` asks for fp32 (the stock build's CPU provider runs nothing else);
    ``onnx-openvino`` for ``auto``, as the service and CLI do (bf16 on a CPU with native bf16).
    """
    from minivess.adapters import class_mask
    from minivess.adapters.inference import window_progress
    from minivess.config.model import InferenceConfig
    from minivess.inference.runners import OnnxRunner

    precision, expected = ("auto", "openvino") if args.worker in OVERLAID else ("fp32", "cpu")
    runner = OnnxRunner.from_file(args.onnx, precision=precision)
    if runner.provider != expected:
        raise SystemExit(f"{args.worker}: ONNX Runtime chose {runner.provider}, not {expected}")
    figures.update(precision=runner.precision, provider=runner.provider)
    window = InferenceConfig(roi_size=tuple(args.roi), overlap=0.25, precision="fp32")

    def count(done: int, total: int) -> None:
        if done == 0:  # called once per volume before its first window
            windows[0] += total

    def run_on(image: torch.Tensor) -> Any:
        with window_progress(count):
            return class_mask(runner.probabilities(image, window))

    return run_on


def worker(args: argparse.Namespace) -> None:
    """Time ``args.worker`` on the saved volume and write its figures, precision and argmax.

    One window-sized crop is predicted first, untimed, so that one-off costs (oneDNN and ONNX
    Runtime kernel selection, the first allocations) fall outside every path's timing alike.
    """
    from minivess.adapters import load_checkpoint, resolve_precision

    configure_threads()
    image = torch.from_numpy(np.load(args.volume))
    windows = [0]
    extra: dict[str, Any] = {}
    if args.worker.startswith("onnx"):
        run_on = _onnx_predict(args, windows, extra)
    else:
        adapter, _ = load_checkpoint(args.checkpoint)
        if args.worker == "project-serial":  # one window at a time on every core
            type(adapter).cpu_window_threads = False
        requested = "fp32" if args.worker in EAGER_FP32 else "auto"
        extra["precision"] = resolve_precision(
            requested, torch.device("cpu"), bf16_on_cpu=adapter.bf16_on_cpu
        )
        baseline = args.worker == "baseline"
        network = monai_segresnet(adapter) if baseline else adapter.network

        def count(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            windows[0] += inputs[0].shape[0]

        network.register_forward_pre_hook(count)

        def run_on(volume: torch.Tensor) -> Any:
            return _predict(args.worker, adapter, network, volume, args.roi, requested)

    h, w, d = args.roi
    run_on(image[:, :h, :w, :d].contiguous())  # warm-up, untimed
    windows[0] = 0
    masks: list[torch.Tensor] = []  # only the last repeat's mask is kept

    def predict() -> None:
        masks[:] = [run_on(image)]

    seconds = time_repeats(predict, args.repeats)
    np.save(args.mask, masks[-1].numpy().astype(np.uint8))
    result = {
        "seconds": seconds,
        "windows": windows[0] // args.repeats,
        "peak_rss_mb": peak_rss_mb(),
        "load_average": load_average(),
        **extra,
    }
    Path(args.result).write_text(json.dumps(result))


def _run_worker(
    path: str, volume: Path, checkpoint: Path, onnx: Path, roi: list[int], repeats: int
) -> dict:
    scratch = volume.parent
    result, mask = scratch / f"{path}.json", scratch / f"{path}.npy"
    command = [sys.executable, "-m", "benchmarks.inference", "--worker", path]
    if path in OVERLAID:  # uv puts the package first on the path of the same interpreter
        uv = [shutil.which("uv") or "uv", "run", "--no-sync", "--python", sys.executable]
        command = [*uv, "--with", OVERLAID[path], "python", *command[1:]]
    command += ["--volume", str(volume), "--checkpoint", str(checkpoint), "--mask", str(mask)]
    command += ["--onnx", str(onnx), "--result", str(result), "--repeats", str(repeats)]
    command += ["--roi", *map(str, roi)]
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    figures = json.loads(result.read_text())
    figures["mask"] = np.load(mask)
    return figures


def _interleaved(
    volume: Path, checkpoint: Path, onnx: Path, roi: list[int], repeats: int
) -> dict[str, dict]:
    """Every path once per round, ``repeats`` rounds, each run in a fresh worker process.

    Taking turns (baseline, project, project-fp32, onnx, ..., baseline, ...) gives every path the
    same share of whatever else the machine is doing, so a slow spell of a shared host lands
    on all of them instead of skewing one ratio. Seconds are pooled over the rounds; the peak
    RSS is the highest of a path's workers; the mask is the last round's.
    """
    runs: dict[str, dict] = {}
    for _ in range(repeats):
        for path in PATHS:
            if "unavailable" in runs.get(path, {}):
                continue
            try:
                figures = _run_worker(path, volume, checkpoint, onnx, roi, 1)
            except subprocess.CalledProcessError as exc:
                if path not in OVERLAID:
                    raise
                runs[path] = {"unavailable": f"worker failed ({exc.returncode}); see its output"}
                continue
            if path not in runs:
                runs[path] = figures
                continue
            pooled = runs[path]
            pooled["seconds"] += figures["seconds"]
            pooled["peak_rss_mb"] = max(pooled["peak_rss_mb"], figures["peak_rss_mb"])
            pooled["mask"] = figures["mask"]
    return runs


def export_graph(checkpoint: Path, roi: Sequence[int], folder: Path) -> Path:
    """The checkpoint exported to ONNX with window ``roi`` (into ``folder``, an export cache)."""
    from minivess.adapters import load_checkpoint
    from minivess.config.model import InferenceConfig
    from minivess.export import cached_export
    from minivess.inference import PredictionSettings, Preprocessing

    adapter, info = load_checkpoint(checkpoint)
    settings = PredictionSettings(
        Preprocessing(percentile_lower=1.0, percentile_upper=99.8),
        InferenceConfig(roi_size=tuple(roi), overlap=0.25, precision="fp32"),
    )
    return cached_export(adapter, settings, info, cache_dir=folder)


def bench_depth(
    image: np.ndarray,
    checkpoint: Path,
    roi: list[int],
    repeats: int,
    peaks: dict[str, float],
    onnx: Path,
) -> dict[str, Any]:
    """Every path on one volume: time, windows, FLOP/s, peak RSS, speed-up and agreement.

    ``speedup`` and ``argmax_agreement`` compare ``project`` with ``baseline``; each path's own
    entry also holds them (``onnx`` included). ``agreement_same_blending`` compares ``project``
    with ``project-fp32``: the effect of precision alone, blending being equal.
    """
    flops = window_flops(checkpoint, roi)
    with tempfile.TemporaryDirectory(prefix="minivess-bench-") as tmp:
        volume = Path(tmp) / "volume.npy"
        np.save(volume, image)
        runs = _interleaved(volume, checkpoint, onnx, roi, repeats)
    report: dict[str, Any] = {"shape": list(image.shape[1:]), "window_gflop": flops / 1e9}
    for path, run in runs.items():
        if "unavailable" in run:
            report[path] = {"unavailable": run["unavailable"]}
            continue
        precision = run["precision"]  # what the worker ran
        seconds = summary(run["seconds"])
        gflops = flops * run["windows"] / seconds["min"] / 1e9
        report[path] = {
            "precision": precision,
            "seconds": seconds,
            "windows": run["windows"],
            "peak_rss_mb": run["peak_rss_mb"],
            "load_average": run["load_average"],
            "gflops": gflops,
            "fraction_of_matmul_peak": gflops / peaks[precision],
        }
        if "provider" in run:
            report[path]["provider"] = run["provider"]
    for path in PATHS:
        if "unavailable" in report[path]:
            continue
        baseline = report["baseline"]["seconds"]["median"]
        report[path]["speedup"] = baseline / report[path]["seconds"]["median"]
        agree = runs["baseline"]["mask"] == runs[path]["mask"]
        report[path]["argmax_agreement"] = float(agree.mean())
    report["speedup"] = report["project"]["speedup"]
    report["argmax_agreement"] = report["project"]["argmax_agreement"]
    same = runs["project"]["mask"] == runs["project-fp32"]["mask"]
    report["agreement_same_blending"] = report["project"]["agreement_same_blending"] = float(
        same.mean()
    )
    return report


def run(
    source: Path,
    checkpoint: Path,
    *,
    depths: Sequence[int | None] = (None, 110),
    repeats: Sequence[int] = (3, 1),
    roi: Sequence[int] = (96, 96, 16),
    size: int | None = None,
    peaks: dict[str, float],
) -> list[dict[str, Any]]:
    """The inference benchmark at each depth (``None``: the real stack as it is).

    Args:
        source: The VesselNN folder.
        checkpoint: Model to run (a file written by ``save_checkpoint``).
        depths: Z sizes to benchmark; deeper ones reflect the real stack along Z.
        repeats: Timed repeats per path at each depth.
        roi: Sliding window (H, W, D).
        size: Crop the volume in-plane (for smoke tests).
        peaks: Dense matmul GFLOP/s per precision (:func:`benchmarks.common.matmul_peak`).

    Returns:
        One report per depth.
    """
    native_depth = load_volume(source, None, size).shape[3]
    results = []
    with tempfile.TemporaryDirectory(prefix="minivess-onnx-") as cache:
        onnx = export_graph(checkpoint, roi, Path(cache))
        for depth, count in zip(depths, repeats, strict=True):
            image = load_volume(source, depth, size)
            report = bench_depth(image, checkpoint, list(roi), count, peaks, onnx)
            report["source_depth"] = native_depth
            report["reflected_along_z"] = image.shape[3] > native_depth
            results.append(report)
    return results


def main() -> None:
    """Worker entry point (the parent benchmark is driven by ``benchmarks.run_all``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=PATHS, required=True)
    parser.add_argument("--volume", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", required=True, help="the checkpoint exported (onnx path)")
    parser.add_argument("--mask", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--roi", type=int, nargs=3, default=[96, 96, 16])
    worker(parser.parse_args())


if __name__ == "__main__":
    main()
