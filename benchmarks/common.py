"""What every benchmark shares: the machine description, repeat statistics, RSS and data paths.

Benchmarks are scripts, not library code: they may set ``torch.set_num_threads`` and spawn
worker processes. Run them from the repository root (``python -m benchmarks.run_all``).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PREPARED_DIR = REPO_ROOT / "data" / "prepared" / "vesselnn"


def configure_threads() -> int:
    """Use every core this process may run on (torch's default counts physical cores only)."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, threads or 1))
    return torch.get_num_threads()


def monai_segresnet(adapter: Any) -> torch.nn.Module:
    """``adapter``'s SegResNet exactly as MONAI builds it, with the adapter's weights.

    The baseline a user would otherwise run: no minivess layer swaps (see
    ``minivess.adapters.layers``), same architecture and state dict.
    """
    from minivess.adapters.segresnet import monai_segresnet as build

    network = build(adapter.config)
    network.load_state_dict(adapter.network.state_dict())
    return network


def vesselnn_dir() -> Path:
    """The real VesselNN volumes: ``$MINIVESS_VESSELNN_DIR`` or ``../shared/data/vesselnn``."""
    configured = os.environ.get("MINIVESS_VESSELNN_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "vesselnn"
    if not (path / "denoised").is_dir():
        raise SystemExit(f"real VesselNN data not found at {path}; set MINIVESS_VESSELNN_DIR")
    return path


def prepared_dataset(source: Path, scratch: Path) -> tuple[Path, Path]:
    """``(dataset_dir, splits_file)``: ``data/prepared/vesselnn`` or a fresh copy in ``scratch``.

    Args:
        source: The raw VesselNN folder, prepared only when the repository has no prepared copy.
        scratch: A temporary folder for that copy.

    Returns:
        The prepared dataset folder and its splits file.
    """
    if (PREPARED_DIR / "splits.json").is_file():
        return PREPARED_DIR, PREPARED_DIR / "splits.json"
    from minivess.data.prepare import prepare_dataset
    from minivess.data.splits import save_splits, splits_for_prepared

    out = scratch / "vesselnn"
    prepare_dataset(source, out)
    save_splits(splits_for_prepared(out, k=3, seed=42), out / "splits.json")
    return out, out / "splits.json"


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of repeated measurements."""
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


def time_repeats(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this reads ``VmHWM``: ``ru_maxrss`` survives ``fork`` + ``exec``, so a worker
    would report its parent's peak whenever that is higher.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, threads, library versions, bf16 support."""
    import monai

    from minivess.adapters.inference import cpu_has_native_bf16

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "native_bf16": cpu_has_native_bf16(),
        "load_average": load_average(),
    }


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best dense-matmul GFLOP/s of ``size`` x ``size`` matrices in fp32 and bf16.

    Args:
        size: Matrix side.
        repeats: Timed calls per dtype (after one warm-up); the fastest counts.

    Returns:
        ``{"fp32": gflops, "bf16": gflops}``.
    """
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.matmul(a, b)
        best = min(time_repeats(lambda a=a, b=b: torch.matmul(a, b), repeats))
        peaks[name] = 2 * size**3 / best / 1e9
    return peaks
