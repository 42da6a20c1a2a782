"""``minivess demo``: the interactive Gradio page on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from minivess.cli.console import console


def demo(
    model: str = typer.Option(
        "models:/minivess@champion",
        "--model",
        "-m",
        help="Model filled in at start: checkpoint (.pt), export, model folder or MLflow URI. "
        "Users can type another in the page.",
    ),
    backend: str = typer.Option(
        None,
        "--backend",
        help="Runtime selected at start: torch or onnx (default: onnx for a .onnx model, "
        "else torch).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    host: str = typer.Option(
        None, "--host", help="Interface to bind (default: demo.host, 127.0.0.1)."
    ),
    port: int = typer.Option(
        None, "--port", "-p", min=1, max=65535, help="TCP port (default: demo.port, 7860)."
    ),
    examples: Path = typer.Option(
        None,
        "--examples",
        help="Folder of example volumes (default: <data.vesselnn_dir>/denoised if present).",
    ),
) -> None:
    """Serve the segmentation demo in the browser (analytics off, no public link)."""
    from minivess.config.settings import get_settings
    from minivess.demo import PredictorCache, Segmenter, example_volumes, launch_demo
    from minivess.demo.session import EXAMPLE_SUBFOLDER
    from minivess.errors import DataError
    from minivess.inference.runners import check_backend
    from minivess.inference.sources import is_onnx_source

    backend = check_backend(backend or ("onnx" if is_onnx_source(model) else "torch"))
    if examples is not None and not examples.is_dir():
        raise DataError(examples, "missing-folder", "the examples folder does not exist")
    settings = get_settings()
    folder = examples or settings.data.vesselnn_dir / EXAMPLE_SUBFOLDER
    offered = example_volumes(folder)
    host = host or settings.demo.host
    port = port or settings.demo.port
    console.print(
        f"minivess demo on http://{host}:{port} (model {model}, {backend} on {device}, "
        f"{len(offered)} example volume(s)); Ctrl+C stops it",
        highlight=False,
        soft_wrap=True,
    )
    launch_demo(
        Segmenter(PredictorCache(device), max_voxels=settings.demo.max_voxels),
        host=host,
        port=port,
        examples=offered,
        default_model=model,
        default_backend=backend,
        max_upload_mb=settings.demo.max_upload_mb,
    )
