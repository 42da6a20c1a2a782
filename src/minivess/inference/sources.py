"""Where a model comes from: a checkpoint file, a model folder, or an MLflow model URI.

Every source ends as a minivess checkpoint (see :mod:`minivess.adapters.checkpoint`), which
rebuilds the adapter and carries its preprocessing and sliding-window settings. An MLflow model
logged by :func:`minivess.tracking.model.log_model` stores the checkpoint as its only artifact;
it is downloaded into a temporary folder, loaded, and the folder removed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from minivess.adapters import CheckpointError, CheckpointInfo, ModelAdapter, load_checkpoint
from minivess.errors import MinivessError, first_line

if TYPE_CHECKING:
    from minivess.export.metadata import OnnxMetadata

MLFLOW_SCHEMES = ("models:/", "runs:/")
"""Prefixes of the MLflow URIs accepted as model sources (registry and run artifacts)."""
CHECKPOINT_SUFFIX = ".pt"
ONNX_SUFFIX = ".onnx"


def is_mlflow_uri(source: str | Path) -> bool:
    """Whether ``source`` names an MLflow model (``models:/...`` or ``runs:/...``)."""
    return isinstance(source, str) and source.startswith(MLFLOW_SCHEMES)


def is_onnx_source(source: str | Path) -> bool:
    """Whether ``source`` names an exported ONNX model (a ``.onnx`` file or MLflow artifact)."""
    return str(source).lower().endswith(ONNX_SUFFIX)


def load_onnx_source(source: str | Path) -> tuple[bytes, OnnxMetadata]:
    """The serialised graph and metadata of an exported model, local or an MLflow artifact.

    Raises:
        OnnxExportError: Missing, corrupt or foreign file, or invalid metadata.
        MinivessError: The MLflow URI names no artifact.
    """
    from minivess.export.metadata import OnnxExportError
    from minivess.export.onnx import load_onnx

    if not is_mlflow_uri(source):
        graph, metadata = load_onnx(source)
        return graph.SerializeToString(), metadata
    with _downloaded(str(source)) as local:
        try:
            graph, metadata = load_onnx(local)
        except OnnxExportError as exc:
            raise OnnxExportError(source, exc.rule, exc.message) from None
    return graph.SerializeToString(), metadata


def load_source(source: str | Path) -> tuple[ModelAdapter, CheckpointInfo]:
    """Rebuild the adapter a model source describes.

    Args:
        source: A checkpoint file (``best.pt``); a folder holding one checkpoint (e.g. a
            downloaded MLflow model); or an MLflow URI: ``models:/<name>@<alias>``,
            ``models:/<name>/<version>``, ``models:/<model_id>``, ``runs:/<run_id>/<path>``.
            MLflow URIs are resolved against the configured tracking store
            (:func:`minivess.tracking.setup.ensure_configured`).

    Returns:
        ``(adapter, info)`` as :func:`minivess.adapters.load_checkpoint` returns them; for an
        MLflow URI, ``info.path`` is the checkpoint's name inside the downloaded model, whose
        temporary copy no longer exists.

    Raises:
        CheckpointError: The file or folder holds no readable minivess checkpoint.
        MinivessError: The MLflow URI names no model, or the tracking store is unreachable.
    """
    if is_mlflow_uri(source):
        return _load_mlflow(str(source))
    path = Path(source)
    if path.is_dir():
        return load_checkpoint(find_checkpoint(path))
    return load_checkpoint(path)


def find_checkpoint(folder: Path) -> Path:
    """The checkpoint inside a model folder.

    An MLflow model folder (with an ``MLmodel`` file) names its checkpoint artifact; any other
    folder must hold exactly one ``*.pt`` file (searched recursively).

    Raises:
        CheckpointError: No checkpoint, or several and no ``MLmodel`` saying which.
    """
    if (folder / "MLmodel").is_file():
        named = _mlmodel_checkpoint(folder)
        if named is not None:
            return named
    found = sorted(folder.rglob(f"*{CHECKPOINT_SUFFIX}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(
            folder, "missing", f"no minivess checkpoint (*{CHECKPOINT_SUFFIX}) in this folder"
        )
    names = ", ".join(str(p.relative_to(folder)) for p in found)
    raise CheckpointError(
        folder, "ambiguous", f"several checkpoints ({names}); pass the file to use"
    )


def _mlmodel_checkpoint(folder: Path) -> Path | None:
    """The checkpoint artifact an MLflow ``MLmodel`` file lists, if it lists one."""
    from mlflow.models import Model

    from minivess.tracking.pyfunc import CHECKPOINT_ARTIFACT

    flavor = Model.load(str(folder)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not isinstance(artifact, dict) or "path" not in artifact:
        return None
    return folder / str(artifact["path"])


@contextmanager
def _downloaded(uri: str) -> Iterator[Path]:
    """The artifact ``uri`` names, downloaded into a temporary folder removed afterwards."""
    from minivess.tracking.setup import ensure_configured, import_mlflow

    tracking_uri = ensure_configured()
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="minivess-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        except MlflowException as exc:
            reason = first_line(exc)
            raise MinivessError(
                f"cannot load model {uri} from the tracking store {tracking_uri}: {reason}; "
                "check the name, version or alias (`mlflow models` / the MLflow UI) and "
                "tracking.uri in configs/settings.toml (MINIVESS_TRACKING__URI)"
            ) from None
        yield local


def _load_mlflow(uri: str) -> tuple[ModelAdapter, CheckpointInfo]:
    with _downloaded(uri) as local:
        try:
            checkpoint = find_checkpoint(local) if local.is_dir() else local
            adapter, info = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            # Name the URI the user gave, not a temporary folder that is about to vanish.
            raise CheckpointError(uri, exc.rule, exc.message) from None
    return adapter, replace(info, path=Path(uri) / checkpoint.name)
