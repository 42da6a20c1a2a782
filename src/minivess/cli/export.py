"""``minivess export``: write a trained model as one self-describing ONNX file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from minivess.cli.console import console


def export(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Checkpoint (.pt), model folder, or MLflow URI (models:/NAME@ALIAS, "
        "models:/NAME/VERSION, runs:/RUN_ID/model).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Destination .onnx file."),
    log: bool = typer.Option(
        True,
        "--log/--no-log",
        help="Also log the file to the model's MLflow training run (when the model records one).",
    ),
) -> None:
    """Export a model to ONNX with its config, preprocessing and sliding window as metadata.

    The file predicts on its own: `minivess predict INPUT --model model.onnx` (ONNX Runtime).
    """
    from minivess.errors import ConfigError
    from minivess.export.onnx import ONNX_SUFFIX
    from minivess.export.source import export_source, log_export

    if out.suffix.lower() != ONNX_SUFFIX:
        raise ConfigError(f"--out must name a {ONNX_SUFFIX} file, got {out}")
    with console.status(f"exporting {escape(model)} to ONNX"):
        exported = export_source(model, out)
    meta = exported.metadata
    size = "dynamic" if meta.input_size is None else "x".join(map(str, meta.input_size))
    console.print(
        f"[green]wrote[/] {escape(str(out))}: {meta.adapter}, spatial size {size}, window "
        f"{'x'.join(map(str, meta.inference.roi_size))}",
        highlight=False,
    )
    if log and meta.training_run_id is not None:
        artifact = log_export(exported)
        console.print(
            f"logged to MLflow run {meta.training_run_id} as {escape(artifact)}", highlight=False
        )
    typer.echo(str(out))
