"""Export a model source (checkpoint, model folder, MLflow URI) and file it with its training run.

Example:
    >>> exported = export_source("models:/minivess@champion", "model.onnx")  # doctest: +SKIP
    >>> log_export(exported)  # doctest: +SKIP
    'onnx/model.onnx'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from minivess.data.io import atomic_path
from minivess.errors import MinivessError
from minivess.export.metadata import OnnxMetadata
from minivess.export.onnx import cached_export, load_onnx
from minivess.inference.settings import PredictionSettings
from minivess.inference.sources import is_mlflow_uri, load_source

ARTIFACT_DIR = "onnx"
"""Folder of the training run's artifacts that holds its ONNX exports."""


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file written from a model source.

    Args:
        path: The ``.onnx`` file.
        metadata: What it records (adapter, config, settings, provenance).
        source: The checkpoint or URI it was exported from.
    """

    path: Path
    metadata: OnnxMetadata
    source: str


def export_source(
    source: str | Path, out: str | Path, *, cache_dir: str | Path | None = None
) -> ExportedModel:
    """Export the model ``source`` names to ``out`` (atomically) with its settings.

    The training run is the checkpoint's ``extra["run_id"]``, or for an MLflow URI the run
    that logged the model. The graph comes from the export cache (see
    :func:`~minivess.export.onnx.cached_export`), so exporting the same model again, or
    predicting with ``backend="onnx"`` after exporting, costs a copy.

    Args:
        source: Anything :meth:`minivess.inference.Predictor.from_source` loads except an
            ``.onnx`` file.
        out: Destination ``.onnx`` file.
        cache_dir: Export cache; default :func:`~minivess.export.onnx.default_cache_dir`.

    Returns:
        The file and its metadata.

    Raises:
        CheckpointError: Not a readable checkpoint, or one without its prediction settings.
        ExportError: The exporter failed.
        MinivessError: The MLflow URI names no model.
    """
    adapter, info = load_source(source)
    settings = PredictionSettings.from_checkpoint(info)
    run_id = info.extra.get("run_id") or _logging_run(source)
    cached = cached_export(adapter, settings, info, training_run_id=run_id, cache_dir=cache_dir)
    with atomic_path(Path(out)) as tmp:
        shutil.copyfile(cached, tmp)
    _, metadata = load_onnx(out)
    return ExportedModel(Path(out), metadata, str(source))


def log_export(exported: ExportedModel) -> str:
    """Log the ONNX file as an artifact ``onnx/<name>`` of the model's training run.

    Returns:
        The artifact path within the run.

    Raises:
        MinivessError: The export records no training run, or the configured tracking store
            has no such run.
    """
    from minivess.evaluation.mlflow_log import check_run

    run_id = exported.metadata.training_run_id
    if run_id is None:
        raise MinivessError(
            f"{exported.source} records no training run (no extra['run_id'] in the checkpoint, "
            "not an MLflow model), so the export cannot be logged to one"
        )
    check_run(run_id)
    from mlflow import MlflowClient

    MlflowClient().log_artifact(run_id, str(exported.path), ARTIFACT_DIR)
    return f"{ARTIFACT_DIR}/{exported.path.name}"


def _logging_run(source: str | Path) -> str | None:
    """The run that logged the MLflow model ``source`` names, or ``None`` for a local file."""
    if not is_mlflow_uri(source):
        return None
    uri = str(source)
    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0] or None
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        run_id = get_model_info(uri).run_id
    except MlflowException:  # the model loaded a moment ago: only its record is missing
        return None
    return str(run_id) if run_id else None
