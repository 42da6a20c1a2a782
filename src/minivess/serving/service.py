"""The minivess REST service: upload a NIfTI or TIFF volume, get its vessel mask back.

Start it with ``minivess serve`` (or ``bentoml serve minivess.serving.service:VesselSegmentation``).
At start-up it loads ``serve.model`` (by default ``models:/minivess@champion``) through
:class:`minivess.inference.Predictor`, the same prediction path as ``minivess predict``.

Endpoints (all ``POST``, multipart field ``file``):

* ``/segment``: the ``uint8`` vessel mask as ``.nii.gz``, on exactly the input's grid;
* ``/probabilities``: ``float32`` P(vessel) as ``.nii.gz``, same grid;
* ``/summary``: JSON with the vessel voxel count, fraction and volume in µm³, shape, spacing,
  the model and timings.

BentoML adds ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` (Prometheus text, with the
model metrics defined here). Uploads are checked by :class:`~minivess.serving.guard.UploadGuard`
and :func:`~minivess.serving.uploads.read_upload` before anything is decoded or predicted;
refusals are 4xx with a JSON message naming the problem and the fix.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel

from minivess.config.settings import get_settings
from minivess.data.io import write_nifti
from minivess.data.volume import Volume
from minivess.serving.guard import UploadGuard
from minivess.serving.uploads import UploadRejected, read_upload
from minivess.telemetry import span

if TYPE_CHECKING:
    from minivess.inference import Prediction
    from minivess.serving.model import ServedModel

UPLOAD_PATHS = ("/segment", "/probabilities", "/summary", "/segment_async", "/segment_async/submit")
REQUEST_TIMEOUT_S = 600
"""Longest a request may take: CPU inference of a large volume runs for minutes."""

PREDICTION_SECONDS = bentoml.metrics.Histogram(
    name="minivess_prediction_seconds",
    documentation="Wall time of normalisation plus sliding-window inference, per volume.",
    labelnames=["endpoint"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
INPUT_VOXELS = bentoml.metrics.Histogram(
    name="minivess_input_voxels",
    documentation="Voxels (H*W*D) of each segmented volume.",
    labelnames=["endpoint"],
    buckets=(1e5, 1e6, 2e6, 4e6, 8e6, 16e6, 32e6, 64e6, 128e6, 256e6),
)
VESSEL_FRACTION = bentoml.metrics.Histogram(
    name="minivess_vessel_fraction",
    documentation="Fraction of voxels predicted as vessel, per volume.",
    labelnames=["endpoint"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
)


class VolumeSummary(BaseModel):
    """What ``/summary`` returns for one volume."""

    shape: tuple[int, int, int]
    """Spatial shape (H, W, D) of the input, as read (a TIFF's (Z, Y, X) becomes (X, Y, Z))."""
    spacing_um: tuple[float, float, float]
    """Voxel size along (H, W, D) in micrometres."""
    spacing_source: str
    """``header`` (NIfTI), ``ome`` (OME-TIFF) or ``default`` (plain TIFF: 1 µm assumed)."""
    vessel_voxels: int
    """Voxels predicted as vessel."""
    vessel_fraction: float
    """``vessel_voxels`` divided by all voxels."""
    vessel_volume_um3: float
    """``vessel_voxels`` times the voxel volume (|det| of the affine) in µm³."""
    model: dict[str, Any]
    """The model that predicted: source, registered name and version, adapter, backend."""
    inference_seconds: float
    """Normalisation plus sliding-window inference."""
    total_seconds: float
    """Reading, checking and predicting the upload."""


@bentoml.service(name="minivess", workers=1, traffic={"timeout": REQUEST_TIMEOUT_S})
class VesselSegmentation:
    """Vessel segmentation of uploaded 3D volumes with the configured model (``serve.*``)."""

    def __init__(self) -> None:
        # BentoML imports this module in its supervisor too; only workers load torch and MONAI.
        from minivess.serving.model import load_served_model

        settings = get_settings().serve
        self.max_voxels = settings.max_voxels
        self.model: ServedModel = load_served_model(settings)
        # One volume at a time: a second concurrent inference would double peak memory.
        self._inference = threading.Lock()

    @bentoml.api
    def segment(self, file: Path, ctx: bentoml.Context) -> Path:
        """The vessel mask (``uint8``, 1 = vessel) of a NIfTI or TIFF volume, as ``.nii.gz``."""
        prediction, _ = self._predict(file, Path(ctx.temp_dir), "segment")
        target = Path(ctx.temp_dir) / "mask.nii.gz"
        return write_nifti(target, prediction.mask.array, like=prediction.mask)

    @bentoml.task
    def segment_async(self, file: Path, ctx: bentoml.Context) -> bytes:
        """``segment`` as a task, for volumes that take longer than a client waits.

        ``POST /segment_async/submit`` (same upload) answers at once with a ``task_id``; poll
        ``GET /segment_async/status?task_id=...`` until ``completed`` (or ``failed``), then fetch
        the mask from ``GET /segment_async/get?task_id=...``.
        """
        prediction, _ = self._predict(file, Path(ctx.temp_dir), "segment_async")
        target = Path(ctx.temp_dir) / "mask.nii.gz"
        # bytes, not a Path: BentoML 1.4's task result store cannot serialise a file response
        return write_nifti(target, prediction.mask.array, like=prediction.mask).read_bytes()

    @bentoml.api
    def probabilities(self, file: Path, ctx: bentoml.Context) -> Path:
        """P(vessel) per voxel (``float32`` in [0, 1]) of a volume, as ``.nii.gz``."""
        prediction, _ = self._predict(file, Path(ctx.temp_dir), "probabilities")
        target = Path(ctx.temp_dir) / "probabilities.nii.gz"
        return write_nifti(target, prediction.probability.array, like=prediction.probability)

    @bentoml.api
    def summary(self, file: Path, ctx: bentoml.Context) -> VolumeSummary:
        """Vessel voxel count, fraction and volume of a volume, with its geometry and model."""
        start = time.perf_counter()
        prediction, volume = self._predict(file, Path(ctx.temp_dir), "summary")
        return summarise(
            volume,
            prediction,
            self.model.describe(),
            total_seconds=time.perf_counter() - start,
        )

    def _predict(self, file: Path, workdir: Path, endpoint: str) -> tuple[Prediction, Volume]:
        with span("minivess.request", endpoint=endpoint):
            try:
                volume = read_upload(file, workdir, max_voxels=self.max_voxels, name=file.name)
            except UploadRejected as exc:
                raise BentoMLException(str(exc), error_code=exc.status) from None
            with self._inference:
                prediction = self.model.predictor.predict(volume)
        mask = prediction.mask.array
        PREDICTION_SECONDS.labels(endpoint=endpoint).observe(prediction.seconds)
        INPUT_VOXELS.labels(endpoint=endpoint).observe(mask.size)
        VESSEL_FRACTION.labels(endpoint=endpoint).observe(float(np.count_nonzero(mask)) / mask.size)
        return prediction, volume


# mypy sees the decorated class; at run time it is a bentoml.Service.
cast(Any, VesselSegmentation).add_asgi_middleware(
    UploadGuard,
    paths=UPLOAD_PATHS,
    max_bytes=int(get_settings().serve.max_upload_mb * 2**20),
)


def summarise(
    volume: Volume, prediction: Prediction, model: dict[str, Any], *, total_seconds: float
) -> VolumeSummary:
    """The ``/summary`` response for ``volume`` and its prediction.

    Args:
        volume: The input as read.
        prediction: Its prediction.
        model: :meth:`ServedModel.describe` of the model.
        total_seconds: Time from receiving the upload to the prediction.
    """
    mask = prediction.mask.array
    vessel = int(np.count_nonzero(mask))
    voxel_um3 = float(abs(np.linalg.det(volume.affine[:3, :3])))
    return VolumeSummary(
        shape=volume.shape,
        spacing_um=volume.spacing,
        spacing_source=str(volume.meta.get("spacing_source", "header")),
        vessel_voxels=vessel,
        vessel_fraction=vessel / mask.size,
        vessel_volume_um3=vessel * voxel_um3,
        model=model,
        inference_seconds=prediction.seconds,
        total_seconds=total_seconds,
    )
