"""Export a trained adapter to one self-describing ONNX file, read it back, cache exports.

Example:
    >>> adapter, info = load_checkpoint("best.pt")  # doctest: +SKIP
    >>> export_onnx(adapter, "model.onnx", settings=PredictionSettings.from_checkpoint(info),
    ...             info=info)  # doctest: +SKIP
    >>> graph, meta = load_onnx("model.onnx")  # doctest: +SKIP
    >>> meta.adapter, meta.inference.roi_size  # doctest: +SKIP
    ('segresnet', (96, 96, 16))
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minivess.adapters import CheckpointInfo, ModelAdapter
from minivess.adapters.checkpoint import code_version
from minivess.adapters.onnx import INPUT_NAME, OUTPUT_NAME
from minivess.data.io import atomic_path
from minivess.errors import first_line
from minivess.export.metadata import OnnxExportError, OnnxMetadata, SizeRuleSpec
from minivess.inference.settings import PredictionSettings
from minivess.uncertainty.head import EXTRA_KEY

if TYPE_CHECKING:
    import onnx

ONNX_SUFFIX = ".onnx"


def export_onnx(
    adapter: ModelAdapter,
    path: str | Path,
    *,
    settings: PredictionSettings,
    info: CheckpointInfo | None = None,
    training_run_id: str | None = None,
) -> OnnxMetadata:
    """Write ``adapter`` as an ONNX graph with its metadata, atomically.

    The graph is traced at the sliding-window ROI; its batch axis is dynamic, and so are its
    spatial axes unless the adapter sets ``onnx_fixed_size`` (SwinUNETR), in which case it takes
    exactly ``settings.inference.roi_size``.

    Args:
        adapter: The trained network (left on its device, in its mode).
        path: Destination, conventionally ``*.onnx``; replaced only once fully written.
        settings: Normalisation and sliding window the model predicts with.
        info: The checkpoint the weights came from (provenance: data and code versions, run).
        training_run_id: MLflow run that trained the weights; defaults to ``info``'s
            ``extra["run_id"]``.

    Returns:
        The metadata written.

    Raises:
        ExportError: The exporter failed.
        ConfigError: The ROI breaks the adapter's size rule.
    """
    import onnx

    meta = describe(adapter, settings, info, training_run_id)
    with atomic_path(Path(path)) as tmp:
        adapter.export_onnx(tmp, example_size=settings.inference.roi_size)
        graph = onnx.load(str(tmp))
        _set_metadata(graph, meta)
        onnx.save(graph, str(tmp))
    return meta


def describe(
    adapter: ModelAdapter,
    settings: PredictionSettings,
    info: CheckpointInfo | None = None,
    training_run_id: str | None = None,
) -> OnnxMetadata:
    """The metadata an export of ``adapter`` carries (see :class:`OnnxMetadata`).

    Raises:
        ConfigError: ``settings.inference.roi_size`` breaks the adapter's size rule.
    """
    import minivess
    from minivess.errors import ConfigError

    roi = settings.inference.roi_size
    if not adapter.valid_size(roi):
        raise ConfigError(
            f"roi_size {roi} does not fit {adapter.name}: try {adapter.pad_to_valid(roi)}"
        )
    extra = info.extra if info is not None else {}
    run_id = training_run_id or extra.get("run_id")
    rule = adapter.size_rule
    return OnnxMetadata(
        adapter=adapter.name,
        config=adapter.config.model_dump(mode="json"),
        size_rule=SizeRuleSpec(divisor=rule.divisor, minimum=rule.minimum),
        input_size=roi if adapter.onnx_fixed_size else None,
        preprocessing=settings.preprocessing,
        inference=settings.inference.model_copy(update={"precision": "fp32"}),
        spacing=extra.get("spacing"),
        training_run_id=str(run_id) if run_id else None,
        data_version=info.data_version if info is not None else None,
        code_version=info.code_version if info is not None else code_version(),
        created_at=info.created_at if info is not None else "",
        minivess_version=minivess.__version__,
        uncertainty=extra.get(EXTRA_KEY) or None,
    )


def load_onnx(path: str | Path) -> tuple[onnx.ModelProto, OnnxMetadata]:
    """Read an exported model and its metadata, checking that they agree.

    Args:
        path: A file written by :func:`export_onnx`.

    Returns:
        ``(graph, metadata)``.

    Raises:
        OnnxExportError: Missing, corrupt or truncated file, no or invalid minivess metadata, or
            a graph whose input does not match it.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise OnnxExportError(path, "missing", "ONNX file does not exist")
    try:
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as exc:
        reason = first_line(exc)
        raise OnnxExportError(
            path, "unreadable", f"not a readable ONNX model (corrupt or truncated?): {reason}"
        ) from None
    meta = OnnxMetadata.from_props({p.key: p.value for p in graph.metadata_props}, path)
    _check_signature(graph, meta, path)
    return graph, meta


def cached_export(
    adapter: ModelAdapter,
    settings: PredictionSettings,
    info: CheckpointInfo | None = None,
    *,
    training_run_id: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """An export of ``adapter`` from the cache, exporting it first if this exact one is missing.

    The key hashes the weights, the config, the settings, the uncertainty head and the exporting
    code's versions, so a retrained, re-configured or re-calibrated model never reuses a stale
    export.

    Args:
        adapter: The trained network.
        settings: Normalisation and sliding window.
        info: Provenance to record (see :func:`export_onnx`).
        training_run_id: MLflow run that trained the weights (see :func:`export_onnx`).
        cache_dir: Folder of cached exports; default :func:`default_cache_dir`.

    Returns:
        The cached ``.onnx`` file.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    meta = describe(adapter, settings, info, training_run_id)
    target = folder / f"{adapter.name}-{export_key(adapter, meta)}{ONNX_SUFFIX}"
    if not target.is_file():
        export_onnx(adapter, target, settings=settings, info=info, training_run_id=training_run_id)
    return target


def default_cache_dir() -> Path:
    """``$MINIVESS_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/minivess/onnx`` (``~/.cache``)."""
    configured = os.environ.get("MINIVESS_CACHE_DIR")
    if configured:
        return Path(configured) / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "minivess" / "onnx"


def export_key(adapter: ModelAdapter, meta: OnnxMetadata) -> str:
    """A short hash of everything an export depends on: weights, metadata, library versions."""
    import onnx
    import torch

    import minivess

    digest = hashlib.sha256()
    for name, tensor in sorted(adapter.network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    versions = [minivess.__version__, str(torch.__version__), onnx.__version__]
    digest.update(json.dumps([meta.model_dump(mode="json"), versions], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _set_metadata(graph: Any, meta: OnnxMetadata) -> None:
    """Replace ``minivess.*`` properties of ``graph`` with ``meta``; keep the exporter's own."""
    import onnx

    kept = [p for p in graph.metadata_props if not p.key.startswith("minivess.")]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in kept}, **meta.to_props()})
    graph.producer_name = "minivess"
    graph.producer_version = meta.minivess_version


def _check_signature(graph: Any, meta: OnnxMetadata, path: Path) -> None:
    """Refuse a graph whose input or output does not match the metadata's sizes."""
    inputs = [i for i in graph.graph.input]
    outputs = [o.name for o in graph.graph.output]
    channels = meta.config.get("in_channels", 1)
    shape = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    expected = [None, channels, *(meta.input_size or (None, None, None))]
    if (
        len(inputs) != 1
        or inputs[0].name != INPUT_NAME
        or OUTPUT_NAME not in outputs
        or len(shape) != 5
        or any(e is not None and s != e for s, e in zip(shape, expected, strict=True))
    ):
        found = f"{inputs[0].name if inputs else '?'} {shape} -> {outputs}"
        raise OnnxExportError(
            path,
            "onnx-signature",
            f"graph signature {found} does not match its metadata (expected {INPUT_NAME} "
            f"{expected} -> {OUTPUT_NAME}); re-export the model",
        )
