"""Run every benchmark once and write ``docs/benchmarks.md`` from the figures.

Usage (from the repository root)::

    uv run python -m benchmarks.run_all [--model runs/quick/<run>/checkpoints/best.pt]

Without ``--model`` the newest ``runs/quick/*/checkpoints/best.pt`` is used, or a seeded
SegResNet(init_filters=16) with random weights when there is none. The figures are also logged
as one MLflow run (experiment ``minivess-benchmarks``, see :mod:`benchmarks.tracking`) unless
``--no-mlflow`` is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from benchmarks import data_pipeline, inference, serving, training
from benchmarks.common import (
    REPO_ROOT,
    configure_threads,
    machine_info,
    matmul_peak,
    prepared_dataset,
    vesselnn_dir,
)
from benchmarks.report import kept_sections, render
from benchmarks.tracking import EXPERIMENT, log_report


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts; the defaults are the real run (~10 minutes on 2 cores)."""

    depths: tuple[int | None, ...] = (None, 110)
    inference_repeats: tuple[int, ...] = (3, 1)
    roi: tuple[int, int, int] = (96, 96, 16)
    crop: int | None = None
    train_steps: int = 20
    train_warmup: int = 3
    patch_size: tuple[int, int, int] = (96, 96, 16)
    model_params: dict[str, Any] = field(default_factory=lambda: {"init_filters": 16})
    loader_epochs: int = 2
    step_repeats: int = 3
    matmul_size: int = 2048
    serving_repeats: int = 3
    serving_clients: int = 2
    equal_time_minutes: float = 5.0
    """Training minutes per loop for the Dice-at-equal-time comparison (0: skip it)."""


def resolve_model(model: Path | None, params: dict[str, Any], scratch: Path) -> tuple[Path, str]:
    """The checkpoint to benchmark and how to describe it.

    Args:
        model: A checkpoint given by the user, or ``None``.
        params: SegResNet parameters for the random-weights fallback.
        scratch: Where that fallback is saved.

    Returns:
        ``(checkpoint, description)``.
    """
    if model is None:
        found = sorted(
            (REPO_ROOT / "runs" / "quick").glob("*/checkpoints/best.pt"),
            key=lambda p: p.stat().st_mtime,
        )
        model = found[-1] if found else None
    if model is not None:
        shown = model.resolve()
        if shown.is_relative_to(REPO_ROOT):
            shown = shown.relative_to(REPO_ROOT)
        return model, f"trained checkpoint `{shown}`"
    from minivess.adapters import build_adapter
    from minivess.config.model import InferenceConfig
    from minivess.inference import PredictionSettings, Preprocessing

    torch.manual_seed(0)
    # What training stores, so the serving benchmark can predict with it on its own.
    extra = PredictionSettings(
        Preprocessing(percentile_lower=1.0, percentile_upper=99.8),
        InferenceConfig(roi_size=(96, 96, 16), overlap=0.25, precision="auto"),
    ).to_extra()
    path = build_adapter("segresnet", params).save_checkpoint(scratch / "random.pt", extra=extra)
    return path, f"seeded SegResNet({params}) with random weights (agreement is on random weights)"


def serving_volume(source: Path, scratch: Path, size: int | None) -> Path:
    """The inference benchmark's real volume (its in-plane corner if ``size``) as ``.nii.gz``."""
    import numpy as np

    from minivess.data.io import read_tiff, write_nifti
    from minivess.data.volume import Volume

    volume = read_tiff(source / "denoised" / inference.VOLUME)
    if size is not None:
        volume = Volume(np.ascontiguousarray(volume.array[:size, :size]), volume.affine)
    name = f"{Path(inference.VOLUME).stem}.nii.gz"
    return write_nifti(scratch / name, volume.array, like=volume)


def collect(
    source: Path,
    model: Path | None,
    scratch: Path,
    settings: Settings | None = None,
    dataset: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Run all benchmarks and return their figures with the machine they ran on.

    Args:
        source: The real VesselNN folder.
        model: Checkpoint to use for inference (see :func:`resolve_model`).
        scratch: Temporary folder (random checkpoint, prepared data if the repo has none).
        settings: Sizes and repeats (defaults: the documented run).
        dataset: ``(dataset_dir, splits_file)`` of a prepared dataset to train on; default
            ``data/prepared/vesselnn``, or ``source`` prepared into ``scratch``.

    Returns:
        ``{"machine", "settings", "model", "matmul_peak_gflops", "inference", "serving",
        "training", "data_pipeline"}``.
    """
    settings = settings or Settings()
    configure_threads()
    report: dict[str, Any] = {"machine": machine_info(), "settings": asdict(settings)}
    peaks = matmul_peak(settings.matmul_size)
    report["matmul_peak_gflops"] = peaks
    checkpoint, report["model"] = resolve_model(model, settings.model_params, scratch)
    report["inference"] = inference.run(
        source,
        checkpoint,
        depths=settings.depths,
        repeats=settings.inference_repeats,
        roi=settings.roi,
        size=settings.crop,
        peaks=peaks,
    )
    report["serving"] = serving.run(
        checkpoint,
        serving_volume(source, scratch, settings.crop),
        repeats=settings.serving_repeats,
        clients=settings.serving_clients,
    )
    dataset_dir, splits_file = dataset or prepared_dataset(source, scratch)
    report["dataset"] = (
        f"`{dataset_dir.relative_to(REPO_ROOT)}`"
        if dataset_dir.is_relative_to(REPO_ROOT)
        else f"`{dataset_dir.name}` (prepared into a temporary folder)"
    )
    report["training"] = training.run(
        dataset_dir,
        splits_file,
        steps=settings.train_steps,
        warmup=settings.train_warmup,
        patch_size=settings.patch_size,
        model_params=settings.model_params,
    )
    if settings.equal_time_minutes > 0:
        report["training"]["equal_time"] = training.dice_at_equal_time(
            dataset_dir,
            splits_file,
            minutes=settings.equal_time_minutes,
            patch_size=settings.patch_size,
            model_params=settings.model_params,
        )
    data_cfg = training.experiment(
        dataset_dir, splits_file, max_epochs=training.MIN_EPOCHS, patch_size=settings.patch_size
    ).data
    report["data_pipeline"] = data_pipeline.run(
        data_cfg,
        epochs=settings.loader_epochs,
        step_repeats=settings.step_repeats,
        model_params=settings.model_params,
    )
    report["machine"]["load_average_end"] = machine_info()["load_average"]
    return report


def main() -> None:
    """Parse arguments, run everything, write the Markdown report and the raw JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint for inference")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for the run (default: the project's settings, embedded SQLite)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="minivess-bench-") as tmp:
        report = collect(vesselnn_dir(), args.model, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    page = render(report, kept_sections(previous))
    args.out.write_text(page, encoding="utf-8")
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    if not args.no_mlflow:
        from minivess.errors import MinivessError

        try:
            run_id = log_report(report, page, args.tracking_uri)
        except MinivessError as exc:  # the page is written; only the MLflow copy is missing
            raise SystemExit(f"not logged to MLflow: {exc}; the report is in {args.out}") from exc
        print(f"logged to MLflow experiment {EXPERIMENT!r}, run {run_id}")


if __name__ == "__main__":
    main()
