"""``minivess predict``: segment a volume or a folder of volumes into NIfTI masks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from minivess.cli.console import console, progress_bar

if TYPE_CHECKING:
    from minivess.inference import Predictor


def predict(
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="A volume (.nii, .nii.gz, .tif, .tiff, .ome.tif) or a folder of them.",
    ),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Checkpoint (.pt), model folder, exported ONNX model (.onnx), or MLflow URI "
        "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write <name>_prob.nii.gz (float32 P(vessel))."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    backend: str = typer.Option(
        None,
        "--backend",
        help="torch or onnx (ONNX Runtime; a checkpoint is exported once into the cache) "
        "[default: onnx for a .onnx model, else torch].",
    ),
    memory_budget_mb: float = typer.Option(
        None,
        "--memory-budget-mb",
        min=1,
        help="Peak resident memory of the whole process (interpreter, torch and model "
        "included): a volume that would exceed it in memory is predicted block by block (same "
        "mask), writing uncompressed <name>_mask.nii; one volume, not a folder.",
    ),
) -> None:
    """Write <name>_mask.nii.gz per volume, on exactly the input's grid (shape and affine).

    A model with conformal results also writes <name>_conformal.nii.gz and <name>_sets.nii.gz;
    an ensemble (torch backend) writes <name>_mi.nii.gz, its members' mutual information.
    """
    from minivess.inference import FolderPredictionError, Predictor, predict_folder

    _check_input(input_path, memory_budget_mb)
    predictor = Predictor.from_source(model, device=device, backend=backend)
    if not input_path.is_dir():
        for path in _predict_one(predictor, input_path, out, probabilities, memory_budget_mb):
            typer.echo(str(path))
        return
    with progress_bar("predict") as bar:
        task = bar.add_task("predict", total=None, item="")

        def report(done: int, total: int, path: Path) -> None:
            bar.update(task, completed=done, total=total, item=path.name)

        result = predict_folder(
            predictor, input_path, out, probabilities=probabilities, progress=report
        )
    for written in result.written.values():
        for path in written:
            typer.echo(str(path))
    for reason in result.failed.values():
        console.print(f"[red]failed[/] {escape(reason)}", highlight=False, soft_wrap=True)
    if not result.ok:
        raise FolderPredictionError(result, out)


def _check_input(input_path: Path, budget_mb: float | None) -> None:
    """Fail on a missing input, an empty folder or a budget for a folder, before loading."""
    from minivess.errors import ConfigError, DataError
    from minivess.inference.batch import volume_files

    if not input_path.exists():
        raise DataError(input_path, "missing-file", "input does not exist")
    if input_path.is_dir():
        volume_files(input_path)
        if budget_mb is not None:
            raise ConfigError("--memory-budget-mb takes one volume; predict the files one by one")


def _predict_one(
    predictor: Predictor, path: Path, out: Path, probabilities: bool, budget_mb: float | None
) -> list[Path]:
    """Predict one volume, block by block when it would not fit ``budget_mb`` in memory.

    The process's peak RSS after one batch of windows (the baseline) plus the in-memory
    estimate is compared with the budget; the choice is said on stderr.
    """
    from minivess.inference.chunked import (
        MB,
        SAFETY_MB,
        baseline_rss_mb,
        check_block_wise,
        in_memory_bytes,
        predict_file_chunked,
    )
    from minivess.inference.lazy import open_lazy

    if budget_mb is None:
        return predictor.predict_file(path, out, probabilities=probabilities)
    shape = open_lazy(path).shape
    baseline = baseline_rss_mb(predictor, shape)
    needed = baseline + SAFETY_MB + in_memory_bytes(shape) / MB
    if needed <= budget_mb:
        console.print(
            f"in memory: {needed:.0f} MB (process {baseline:.0f} MB + volume) fits the "
            f"{budget_mb:g} MB budget",
            highlight=False,
            soft_wrap=True,
        )
        return predictor.predict_file(path, out, probabilities=probabilities)
    check_block_wise(predictor)
    console.print(
        f"block by block: in memory would take {needed:.0f} MB (process {baseline:.0f} MB + "
        f"volume), over the {budget_mb:g} MB budget",
        highlight=False,
        soft_wrap=True,
    )
    return predict_file_chunked(
        predictor,
        path,
        out,
        memory_budget_mb=budget_mb,
        probabilities=probabilities,
        baseline_mb=baseline,
    ).written
