"""Exploration of CPU fast paths for sliding-window inference, against eager fp32 MONAI.

Each variant runs in its own fresh worker process with one torch (and ONNX Runtime) thread,
on the same saved volume and checkpoint, and reports process CPU seconds and wall seconds
per repeat, the one-off cost of its first call (compilation, for compiled variants), and its
argmax mask, which the parent compares voxel by voxel with the baseline's. CPU seconds are the
figure to compare on a shared machine: wall time also counts the time other jobs held the core.

A variant is named ``backend:precision:layout:engine:blending:windows`` where

- backend: ``torch`` or ``onnx``;
- precision: ``fp32``, ``bf16`` (autocast), ``bf16gn`` (autocast with every GroupNorm and the
  final block in float32) or ``bf16w`` (weights and activations cast to bf16, no autocast);
- layout: ``cl`` (``channels_last_3d``) or ``nc`` (contiguous);
- engine: ``eager``, ``compile`` (inductor) or ``freeze`` (inductor with freezing); for
  ``onnx``: ``all``, ``ext`` or ``basic`` (graph optimisation level), ``q8`` (int8 dynamic
  quantisation) or ``q8s`` (int8 static QDQ quantisation of the convolutions, calibrated on
  another volume);
- blending: ``constant`` (MONAI's default, the baseline's) or ``gaussian`` (the project's);
- windows: ``sw_batch_size``.

Run: ``python -m benchmarks.explore_cpu --size 256 --variants ...`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmarks.common import REPO_ROOT, load_average, peak_rss_mb, vesselnn_dir

BASELINE = "torch:fp32:nc:eager:constant:1"
CALIBRATION_VOLUME = "burgess2014_lowerRes_hiSNR_BM4D_denoised.tif"
"""Static int8 calibration data: a different real volume (320x320x26) than the one measured."""
DEFAULT_CHECKPOINT = REPO_ROOT / "runs" / "quick" / "20261122-081937" / "checkpoints" / "best.pt"


@dataclass(frozen=True)
class Variant:
    """One way of running the sliding window (see the module docstring for the fields)."""

    backend: str
    precision: str
    layout: str
    engine: str
    blending: str
    windows: int

    @classmethod
    def parse(cls, name: str) -> Variant:
        """The variant called ``name``."""
        backend, precision, layout, engine, blending, windows = name.split(":")
        return cls(backend, precision, layout, engine, blending, int(windows))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fp32_groupnorm(network: torch.nn.Module) -> None:
    """Run every GroupNorm (and the final norm-relu-conv block) in float32 under autocast."""
    from monai.networks.nets import SegResNet

    def float_forward(module: torch.nn.Module) -> None:
        forward = module.forward

        def wrapped(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", enabled=False):
                return forward(x.float())

        module.forward = wrapped  # type: ignore[method-assign]

    for module in network.modules():
        if isinstance(module, torch.nn.GroupNorm):
            float_forward(module)
    if isinstance(network, SegResNet):
        float_forward(network.conv_final)


def _torch_predictor(variant: Variant, network: torch.nn.Module) -> Callable:
    """A window predictor (float32 logits) for a torch variant, and its network set up."""
    network.eval()
    if variant.precision == "bf16gn":
        _fp32_groupnorm(network)
    dtype = torch.bfloat16 if variant.precision == "bf16w" else torch.float32
    network.to(dtype)
    channels_last = variant.layout == "cl"
    if channels_last:
        network.to(memory_format=torch.channels_last_3d)
    model: Any = network
    if variant.engine in ("compile", "freeze"):
        import torch._inductor.config as inductor

        inductor.freezing = variant.engine == "freeze"
        model = torch.compile(network, dynamic=False)
    autocast = variant.precision.startswith("bf16")
    size = variant.windows

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        count = patch.shape[0]
        if count < size:  # keep one static batch size for compiled graphs
            patch = torch.cat([patch, patch[-1:].expand(size - count, *patch.shape[1:])])
        if channels_last:
            patch = patch.contiguous(memory_format=torch.channels_last_3d)
        patch = patch.to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(patch)[:count].float()

    return predictor


def _quantize_static(graph: Path, scratch: Path) -> Path:
    """``graph`` with int8 QDQ convolutions, calibrated on 12 windows of another volume."""
    import benchmarks.inference as inference
    from benchmarks.inference import load_volume
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    saved, inference.VOLUME = inference.VOLUME, CALIBRATION_VOLUME
    try:
        volume = load_volume(vesselnn_dir())
    finally:
        inference.VOLUME = saved
    corners = [(i, j) for i in range(0, 225, 112) for j in range(0, 225, 112)]
    windows = iter(
        [
            {"image": np.ascontiguousarray(volume[None, :, i : i + 96, j : j + 96, :16])}
            for i, j in corners
        ][:12]
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(windows, None)

    pre, out = scratch / "pre.onnx", scratch / "q8s.onnx"
    quant_pre_process(str(graph), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
    )
    return out


def _onnx_predictor(variant: Variant, graph: Path, scratch: Path) -> Callable:
    import onnxruntime as ort

    path = graph
    if variant.engine == "q8s":
        path = _quantize_static(graph, scratch)
    if variant.engine == "q8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = scratch / "q8.onnx"
        quantize_dynamic(graph, path, weight_type=QuantType.QInt8)
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "q8": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "q8s": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[variant.engine]
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        feed = {name_in: np.ascontiguousarray(patch.numpy(), dtype=np.float32)}
        return torch.from_numpy(session.run([name_out], feed)[0])

    return predictor


def worker(args: argparse.Namespace) -> None:
    """Time one variant on the saved volume; write its figures and argmax mask."""
    from monai.inferers import sliding_window_inference

    from minivess.adapters import load_checkpoint

    torch.set_num_threads(1)
    variant = Variant.parse(args.worker)
    image = torch.from_numpy(np.load(args.volume))[None]
    roi = list(args.roi)
    start_cpu, start_wall = _cpu_seconds(), time.perf_counter()
    if variant.backend == "onnx":
        predictor = _onnx_predictor(variant, Path(args.onnx), Path(args.volume).parent)
    else:
        adapter, _ = load_checkpoint(Path(args.checkpoint))
        predictor = _torch_predictor(variant, adapter.network)

    def predict(volume: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = sliding_window_inference(
                volume,
                roi_size=roi,
                sw_batch_size=variant.windows,
                predictor=predictor,
                overlap=0.25,
                mode=variant.blending,
            )
        return torch.as_tensor(logits)[0].argmax(0)

    # First call on one window's worth of volume: compilation, session warm-up, allocator.
    predict(image[..., : roi[0], : roi[1], : roi[2]].contiguous())
    setup = {"cpu": _cpu_seconds() - start_cpu, "wall": time.perf_counter() - start_wall}
    cpu, wall = [], []
    mask = None
    for _ in range(args.repeats):
        c, w = _cpu_seconds(), time.perf_counter()
        mask = predict(image)
        cpu.append(_cpu_seconds() - c)
        wall.append(time.perf_counter() - w)
    assert mask is not None
    np.save(args.mask, mask.numpy().astype(np.uint8))
    result = {
        "cpu": cpu,
        "wall": wall,
        "setup": setup,
        "peak_rss_mb": peak_rss_mb(),
        "load_average": load_average(),
    }
    Path(args.result).write_text(json.dumps(result))


def _run_worker(name: str, scratch: Path, args: argparse.Namespace, index: int) -> dict[str, Any]:
    result, mask = scratch / f"{index}.json", scratch / f"{index}.npy"
    command = [sys.executable, "-m", "benchmarks.explore_cpu", "--worker", name]
    command += ["--volume", str(scratch / "volume.npy"), "--checkpoint", str(args.checkpoint)]
    command += ["--onnx", str(args.onnx or ""), "--mask", str(mask), "--result", str(result)]
    command += ["--repeats", str(args.repeats), "--roi", *map(str, args.roi)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.cold_cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / f"inductor-{index}")
    subprocess.run(command, cwd=REPO_ROOT, check=True, env=env)
    figures = json.loads(result.read_text())
    figures["mask"] = np.load(mask)
    return figures


def _export(checkpoint: Path, roi: list[int], folder: Path) -> Path:
    from benchmarks.inference import export_graph

    return export_graph(checkpoint, roi, folder)


def explore(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the baseline and every variant in turn, ``--rounds`` times; one row per run.

    Each row's agreement is with the baseline's mask, and also with the first variant's.
    """
    from benchmarks.inference import load_volume

    image = load_volume(vesselnn_dir(), None, args.size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="minivess-explore-") as tmp:
        scratch = Path(tmp)
        np.save(scratch / "volume.npy", image)
        if any(v.startswith("onnx") for v in args.variants) and not args.onnx:
            args.onnx = _export(args.checkpoint, list(args.roi), scratch / "onnx")
        index = 0
        for round_ in range(args.rounds):
            base = _run_worker(BASELINE, scratch, args, index)
            index += 1
            first = None
            for name in args.variants:
                run = _run_worker(name, scratch, args, index)
                index += 1
                first = run["mask"] if first is None else first
                cpu, wall = float(np.median(run["cpu"])), float(np.median(run["wall"]))
                row = {
                    "round": round_,
                    "variant": name,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "base_cpu_s": float(np.median(base["cpu"])),
                    "base_wall_s": float(np.median(base["wall"])),
                    "cpu_ratio": float(np.median(base["cpu"])) / cpu,
                    "wall_ratio": float(np.median(base["wall"])) / wall,
                    "agreement": float((run["mask"] == base["mask"]).mean()),
                    "agreement_vs_first_variant": float((run["mask"] == first).mean()),
                    "setup_cpu_s": run["setup"]["cpu"],
                    "setup_wall_s": run["setup"]["wall"],
                    "peak_rss_mb": run["peak_rss_mb"],
                    "load": run["load_average"],
                    "cpu_all": run["cpu"],
                    "wall_all": run["wall"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    """Parent (``--variants``) or worker (``--worker``) entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker")
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--size", type=int, default=None, help="in-plane crop (None: 512)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cold-cache", action="store_true", help="fresh inductor cache each")
    parser.add_argument("--volume")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--onnx")
    parser.add_argument("--mask")
    parser.add_argument("--result")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--roi", type=int, nargs=3, default=[96, 96, 16])
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = explore(args)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
