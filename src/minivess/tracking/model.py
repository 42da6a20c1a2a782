"""Log a trained minivess checkpoint as an MLflow model that predicts volumes of any size."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from minivess.errors import MinivessError
from minivess.tracking.setup import import_mlflow

_MODEL_CODE = Path(__file__).with_name("_model_code.py")
MODEL_NAME = "model"
"""Default name of the logged model within its run."""
CARD_ARTIFACT = "model_card"
"""Key of the optional Markdown model card in the model's ``artifacts``."""


def log_model(
    checkpoint_path: str | Path,
    name: str = MODEL_NAME,
    registered_model_name: str | None = None,
    model_card: str | Path | None = None,
) -> Any:
    """Log ``checkpoint_path`` into the active run as a ``pyfunc`` model.

    The model is :class:`~minivess.tracking.pyfunc.MinivessPyfunc` with the checkpoint as its
    only artifact; its signature takes float32 ``(-1, C, -1, -1, -1)`` volumes, so batch and
    spatial size are free. Requirements are given explicitly (inferring them costs seconds).

    Args:
        checkpoint_path: A minivess checkpoint whose ``extra["inference"]`` holds at least
            ``roi_size`` (and ideally ``overlap``, ``sw_batch_size``) and, for raw-intensity
            input, ``extra["preprocessing"]`` (``percentile_lower``/``percentile_upper``).
        name: Name of the model within the run.
        registered_model_name: Also register it under this name (without touching aliases;
            see :func:`~minivess.tracking.registry.register_and_promote` for promotion).
        model_card: A Markdown model card (see :mod:`minivess.tracking.model_card`) stored as
            the model's ``model_card`` artifact.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``model_id``, ``registered_model_version``).

    Raises:
        MinivessError: No run is active, or the checkpoint lacks its inference settings.
        CheckpointError: The file is not a readable minivess checkpoint.

    Example:
        >>> with TrackedRun(config=cfg) as run:  # doctest: +SKIP
        ...     info = log_model("runs/x/best.pt")
        >>> mlflow.pyfunc.load_model(info.model_uri).predict(volume[None])  # doctest: +SKIP
    """
    import minivess
    from minivess.adapters.checkpoint import load_checkpoint
    from minivess.tracking.pyfunc import CHECKPOINT_ARTIFACT

    mlflow = import_mlflow()
    if mlflow.active_run() is None:
        raise MinivessError("log_model needs an active run: call it inside `with TrackedRun(...)`")
    adapter, info = load_checkpoint(checkpoint_path)
    inference = info.extra.get("inference")
    if not isinstance(inference, dict) or "roi_size" not in inference:
        raise MinivessError(
            f"{checkpoint_path}: the checkpoint has no extra['inference']['roi_size'], so the "
            "logged model would not know its sliding window; save it with "
            "extra={'inference': {'roi_size': ..., 'overlap': ..., 'sw_batch_size': ...}}"
        )
    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint_path)}
    if model_card is not None:
        artifacts[CARD_ARTIFACT] = str(model_card)
    with warnings.catch_warnings():
        # The signature is explicit; an input example would only make MLflow run the network.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_MODEL_CODE),
            artifacts=artifacts,
            signature=_signature(adapter.in_channels, adapter.out_channels),
            pip_requirements=[f"minivess=={minivess.__version__}", "torch", "monai"],
            registered_model_name=registered_model_name,
            metadata={
                "adapter": info.adapter,
                "data_version": info.data_version or "",
                "minivess_version": minivess.__version__,
            },
        )


def _signature(in_channels: int, out_channels: int) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    float32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, in_channels, -1, -1, -1))]),
        outputs=Schema([TensorSpec(float32, (-1, out_channels, -1, -1, -1))]),
    )
