"""A volume larger than the memory budget: chunked prediction against in-memory prediction.

Writes a synthetic uint16 volume (default 1024x1024x200, 400 MB) to an uncompressed NIfTI slab
by slab, then predicts it with a SegResNet (init_filters 16, seeded random weights; the speed
and memory of a forward pass do not depend on the weights) in a fresh child process per mode:

* ``chunked``: :func:`minivess.inference.chunked.predict_file_chunked` with ``--budget-mb``,
  a budget for the peak RSS of the whole process: after one warm-up batch the process's peak
  RSS is the baseline, and what is left (less ``SAFETY_MB``) is the arrays' budget;
* ``memory``: :meth:`minivess.inference.Predictor.predict_file` (the whole volume in memory).

Each child reports its wall time, its own peak RSS (``getrusage``) and, in chunked mode, the
baseline, the arrays' budget and the blocks. With both modes the masks are compared voxel by
voxel. Run from the repository root::

    python -m benchmarks.large_volume --shape 1024 1024 200 --budget-mb 2048 --modes chunked memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROI = [96, 96, 16]


def write_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """A seeded vessel-like uint16 volume (bright sinuous tubes on noise), written slab by slab."""
    import nibabel as nib

    from minivess.inference.lazy import LazyVolume, nifti_memmap

    header = nib.Nifti1Header()
    header.set_xyzt_units(xyz="micron")
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    like = LazyVolume(path, shape, np.dtype(np.uint16), header, None)
    rng = np.random.default_rng(0)
    x = np.arange(shape[0], dtype=np.float32)[:, None]
    y = np.arange(shape[1], dtype=np.float32)[None, :]
    with nifti_memmap(path, shape, np.uint16, like) as out:
        for z in range(shape[2]):
            tubes = np.sin(x / 13 + np.sin(y / 31 + z / 11)) + np.sin(y / 17 + z / 9)
            noise = rng.normal(100, 15, size=shape[:2]).astype(np.float32)
            out[:, :, z] = np.clip(noise + 800 * (tubes > 1.6), 0, 65535).astype(np.uint16)


def child(
    mode: str, volume: Path, out: Path, budget_mb: float, threads: int, precision: str = "fp32"
) -> None:
    """Predict ``volume`` one way and print a JSON line with seconds and peak RSS."""
    import torch

    from minivess.adapters import build_adapter
    from minivess.inference import Predictor
    from minivess.inference.chunked import SAFETY_MB, peak_rss_mb, predict_file_chunked
    from minivess.inference.settings import PredictionSettings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", {"init_filters": 16})
    settings = PredictionSettings.from_extra(
        {
            "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
            "inference": {
                "roi_size": ROI,
                "overlap": 0.25,
                "sw_batch_size": 1,
                "precision": precision,
            },
        }
    )
    predictor = Predictor(adapter, settings)
    start_rss = peak_rss_mb()
    start = time.perf_counter()
    chunked: dict[str, object] = {}
    if mode == "chunked":
        result = predict_file_chunked(predictor, volume, out, memory_budget_mb=budget_mb)
        written = result.written[0]
        chunked = {
            "budget_mb": budget_mb,
            "budget_covers": "whole-process peak RSS",
            "baseline_mb": round(result.baseline_mb or 0.0, 1),
            "safety_mb": SAFETY_MB,
            "arrays_budget_mb": round(result.arrays_mb, 1),
            "blocks": result.blocks,
            "block_shape": list(result.block_shape),
            "within_budget": peak_rss_mb() <= budget_mb,
        }
    else:
        written = predictor.predict_file(volume, out)[0]
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    line = {
        "mode": mode,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak),
        "rss_before_predict_mb": round(start_rss),
        **chunked,
        "threads": threads,
        "precision": precision,
        "mask": str(written),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    """Generate the volume, run each mode in a child process, compare the masks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[1024, 1024, 200])
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--modes", nargs="+", default=["chunked", "memory"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "VOLUME", "OUT"))
    args = parser.parse_args()
    if args.child:
        mode, volume, out = args.child
        child(mode, Path(volume), Path(out), args.budget_mb, args.threads, args.precision)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="minivess-large-"))
    volume = work / "large.nii"
    if not volume.exists():
        start = time.perf_counter()
        write_volume(volume, tuple(args.shape))
        print(
            f"wrote {volume} ({volume.stat().st_size / 2**20:.0f} MB) "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    masks = {}
    for mode in args.modes:
        command = [
            sys.executable,
            "-m",
            "benchmarks.large_volume",
            "--budget-mb",
            str(args.budget_mb),
            "--threads",
            str(args.threads),
            "--precision",
            args.precision,
            "--child",
            mode,
            str(volume),
            str(work / mode),
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0:  # e.g. a budget below the process's own peak: say why
            sys.exit(f"{mode} failed: {done.stderr.strip().splitlines()[-1]}")
        line = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(line), flush=True)
        masks[mode] = line["mask"]
    if len(masks) == 2:
        import nibabel as nib

        a, b = (np.asarray(nib.load(p).dataobj) for p in masks.values())
        print(
            json.dumps(
                {"mask_agreement": float((a == b).mean()), "identical": bool((a == b).all())}
            )
        )


if __name__ == "__main__":
    main()
