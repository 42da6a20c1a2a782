"""``minivess predict``: segment a volume or a folder of volumes into NIfTI masks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from minivess.cli.console import console, progress_bar


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
) -> None:
    """Write <name>_mask.nii.gz per volume, on exactly the input's grid (shape and affine)."""
    from minivess.errors import DataError
    from minivess.inference import FolderPredictionError, Predictor, predict_folder
    from minivess.inference.batch import volume_files

    if not input_path.exists():
        raise DataError(input_path, "missing-file", "input does not exist")
    if input_path.is_dir():
        volume_files(input_path)  # fail on an empty folder before loading the model
    predictor = Predictor.from_source(model, device=device, backend=backend)
    if not input_path.is_dir():
        for path in predictor.predict_file(input_path, out, probabilities=probabilities):
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
