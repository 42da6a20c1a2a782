"""An MLflow ``pyfunc`` model whose only artifact is a minivess checkpoint.

The checkpoint rebuilds the adapter and carries its preprocessing and sliding-window settings,
so ``mlflow.pyfunc.load_model("models:/minivess@champion").predict(volumes)`` needs nothing
else. Unlike ``mlflow.pytorch``'s default ``pt2`` format, which freezes the input shape,
volumes of any size are accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from minivess.adapters.inference import window_blending
from minivess.errors import ConfigError, DataError
from minivess.inference.settings import stored_inference

CHECKPOINT_ARTIFACT = "checkpoint"
"""Key of the checkpoint file in the model's ``artifacts``."""


class MinivessPyfunc(PythonModel):
    """Vessel segmentation probabilities for whole volumes of any size.

    ``predict`` takes raw float32 intensities ``(N, C, H, W, D)`` (the logged signature) or a
    single ``(C, H, W, D)`` volume when called directly, applies the checkpoint's
    preprocessing (per-volume percentile scaling to [0, 1]) and sliding-window inference with
    the checkpoint's ``roi_size``, ``overlap`` and ``sw_batch_size``, and returns float32 softmax
    probabilities ``(N, classes, H, W, D)`` (or ``(classes, H, W, D)``): channel 1 is P(vessel),
    ``argmax`` over axis 1 is the mask. The network runs on the GPU when one is available.
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the adapter from the checkpoint artifact."""
        from minivess.adapters.checkpoint import load_checkpoint

        adapter, info = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        adapter.network.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.adapter = adapter
        self.inference = stored_inference(dict(info.extra.get("inference") or {}))
        self.preprocessing = dict(info.extra.get("preprocessing") or {})

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Probabilities for one volume ``(C, H, W, D)`` or a batch ``(N, C, H, W, D)``.

        Raises:
            DataError: The input is not 4-D or 5-D with the model's channel count.
        """
        volumes = np.asarray(model_input, dtype=np.float32)
        if volumes.ndim == 4:
            return self._predict_one(volumes)
        if volumes.ndim != 5:
            raise DataError(
                None,
                "input-shape",
                f"expected (C, H, W, D) or (N, C, H, W, D) float32 volumes, got {volumes.shape}",
            )
        return np.stack([self._predict_one(volume) for volume in volumes])

    def _predict_one(self, volume: np.ndarray) -> np.ndarray:
        target = self.preprocessing.get("target_spacing_um")
        if target is not None:
            # A bare array has no voxel size to resample from.
            raise ConfigError(
                f"this model predicts at its training voxel size {list(target)} um and a bare "
                "array carries no voxel size: predict files with `minivess predict` or "
                "minivess.inference.Predictor"
            )
        with window_blending(self.inference["blend"]):
            probabilities = self.adapter.predict_volume(
                preprocess(volume, self.preprocessing),
                roi_size=self.inference["roi_size"],
                overlap=self.inference.get("overlap", 0.25),
                sw_batch_size=self.inference.get("sw_batch_size", 1),
                precision=self.inference.get("precision", "auto"),
            )
        return probabilities.numpy()


def preprocess(volume: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """Map the volume's intensity percentiles to [0, 1] (clipped), as training did.

    Args:
        volume: ``(C, H, W, D)`` raw intensities.
        settings: The checkpoint's ``extra["preprocessing"]`` (``percentile_lower``,
            ``percentile_upper``); empty means the input is already normalised.

    Returns:
        float32 ``(C, H, W, D)``.
    """
    if not settings:
        return volume.astype(np.float32, copy=False)
    from minivess.data.transforms import normalise_intensity

    percentiles = (settings["percentile_lower"], settings["percentile_upper"])
    return normalise_intensity(volume, percentiles).numpy()
