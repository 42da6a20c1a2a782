"""The minivess REST service: upload a NIfTI or TIFF volume, get its vessel mask back.

Start it with ``minivess serve`` (or ``bentoml serve minivess.serving.service:VesselSegmentation``).
At start-up it loads ``serve.model`` (by default ``models:/minivess@champion``) through
:class:`minivess.inference.Predictor`, the same prediction path as ``minivess predict``.

Upload endpoints (all ``POST``, multipart field ``file``):

* ``/segment``: the ``uint8`` vessel mask as ``.nii.gz``, on exactly the input's grid;
* ``/probabilities``: ``float32`` P(vessel) (calibrated if the model is) as ``.nii.gz``;
* ``/conformal``, ``/prediction_sets``, ``/entropy``: the risk-controlled mask, the three-state
  prediction-set map and the binary entropy (bits) of P(vessel), same grid (the first two only
  for a model that stores a conformal calibration, see :mod:`minivess.serving.outputs`);
* ``/summary``: JSON with the vessel voxel count, fraction and volume in µm³, shape, spacing,
  calibration and conformal numbers, the model and timings;
* ``/segment_async/submit`` (BentoML task): ``/segment`` in the background, with
  ``GET /segment_async/status|get?task_id=...`` and ``GET /segment_async/progress?task_id=...``.

``GET /drift`` reports drift of the served volumes against ``serve.drift_reference`` (see
:mod:`minivess.serving.drift`). BentoML adds ``/healthz``, ``/livez``, ``/readyz`` and
``/metrics`` (Prometheus text, with the model and drift metrics defined here). Uploads are
checked by :class:`~minivess.serving.guard.UploadGuard` and
:func:`~minivess.serving.uploads.read_upload` before anything is decoded or predicted;
refusals are 4xx with a JSON message naming the problem and the fix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel

from minivess.config.settings import ServeSettings, get_settings
from minivess.data.io import write_nifti
from minivess.data.volume import Volume
from minivess.errors import MinivessError
from minivess.serving.drift import DriftMonitor, off_status
from minivess.serving.guard import UploadGuard
from minivess.serving.memory import IdleReleaser, can_release
from minivess.serving.outputs import (
    Output,
    OutputUnavailable,
    output_volume,
    require_output,
    uncertainty_summary,
)
from minivess.serving.progress import (
    UNTRACKED,
    RegisterSubmittedTasks,
    TaskProgress,
    TaskTracker,
)
from minivess.serving.routes import monitor_routes
from minivess.serving.uploads import UploadRejected, read_upload
from minivess.telemetry import span

if TYPE_CHECKING:
    from minivess.drift.report import DriftResult
    from minivess.inference import Prediction
    from minivess.serving.model import ServedModel
    from minivess.uncertainty.head import UncertaintyHead

UPLOAD_PATHS = (
    "/segment",
    "/probabilities",
    "/summary",
    "/conformal",
    "/prediction_sets",
    "/entropy",
    "/segment_async",
    "/segment_async/submit",
)
SUBMIT_PATH = "/segment_async/submit"
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
# Gauges keep the worker's latest value (no pid label); NaN until the first verdict.
DRIFT_SHARE = bentoml.metrics.Gauge(
    name="minivess_drift_share",
    documentation="Share of drift features whose KS p-value is below the threshold (NaN: none).",
    multiprocess_mode="livemostrecent",
)
DRIFT_DETECTED = bentoml.metrics.Gauge(
    name="minivess_drift_detected",
    documentation="1 if the latest drift test found drift, 0 if not, NaN before the first.",
    multiprocess_mode="livemostrecent",
)
DRIFT_P_VALUE = bentoml.metrics.Gauge(
    name="minivess_drift_p_value",
    documentation="KS p-value of each drift feature in the latest drift test.",
    labelnames=["feature"],
    multiprocess_mode="livemostrecent",
)
DRIFT_WINDOW_ROWS = bentoml.metrics.Gauge(
    name="minivess_drift_window_rows",
    documentation="Feature rows (crops) of recent volumes in the drift window.",
    multiprocess_mode="livemostrecent",
)
PROGRESS = TaskProgress()
"""Progress of this worker's asynchronous tasks (``GET /segment_async/progress``)."""


class ConformalSummary(BaseModel):
    """The risk-controlled mask of a volume, in ``/summary``."""

    alpha: float
    """Target expected false-negative rate the threshold was calibrated for."""
    threshold: float
    """Voxels with (calibrated) P(vessel) above it are in the mask."""
    vessel_voxels: int
    """Voxels in the risk-controlled mask."""
    vessel_fraction: float
    """``vessel_voxels`` divided by all voxels."""


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
    calibrated: bool
    """Whether P(vessel) went through the model's stored calibration."""
    conformal: ConformalSummary | None
    """The risk-controlled mask; ``None`` when the model stores no conformal threshold."""
    uncertain_fraction: float | None
    """Share of voxels whose prediction set holds both classes; ``None`` without sets."""
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
        from minivess.inference.compute import on_compute_thread
        from minivess.serving.model import load_served_model

        settings = get_settings().serve
        self.max_voxels = settings.max_voxels
        # Loaded and run on one thread (see minivess.inference.compute), which also keeps to
        # one volume at a time: a second concurrent inference would double peak memory.
        self.model: ServedModel = on_compute_thread(load_served_model, settings)
        self._compute = on_compute_thread
        self.progress = PROGRESS
        self.drift = drift_monitor(settings, self.model.predictor.uncertainty)
        self.memory = memory_releaser(settings)

    @bentoml.on_shutdown
    def stop_background_threads(self) -> None:
        """Stop the drift and memory threads with the worker."""
        if self.drift is not None:
            self.drift.close()
        self.memory.close()

    @bentoml.api
    def segment(self, file: Path, ctx: bentoml.Context) -> Path:
        """The vessel mask (``uint8``, 1 = vessel) of a NIfTI or TIFF volume, as ``.nii.gz``."""
        with self.memory.request():
            prediction, _ = self._predict(file, Path(ctx.temp_dir), "segment")
            target = Path(ctx.temp_dir) / "mask.nii.gz"
            return write_nifti(target, prediction.mask.array, like=prediction.mask)

    @bentoml.task
    def segment_async(self, file: Path, ctx: bentoml.Context) -> bytes:
        """``segment`` as a task, for volumes that take longer than a client waits.

        ``POST /segment_async/submit`` (same upload) answers at once with a ``task_id``; poll
        ``GET /segment_async/status?task_id=...`` until ``completed`` (or ``failed``), then fetch
        the mask from ``GET /segment_async/get?task_id=...``. ``GET
        /segment_async/progress?task_id=...`` tells the stage and the sliding windows done.
        """
        task = self.progress.track(_task_id(ctx))
        try:
            with self.memory.request():
                prediction, _ = self._predict(file, Path(ctx.temp_dir), "segment_async", task=task)
                task.stage("writing")
                target = Path(ctx.temp_dir) / "mask.nii.gz"
                # bytes, not a Path: BentoML 1.4's task store cannot serialise a file response
                written = write_nifti(target, prediction.mask.array, like=prediction.mask)
                mask = written.read_bytes()
        except Exception as exc:
            task.failed(_public_error(exc))
            raise
        task.stage("done")
        return mask

    @bentoml.api
    def probabilities(self, file: Path, ctx: bentoml.Context) -> Path:
        """P(vessel) per voxel (``float32`` in [0, 1]) of a volume, as ``.nii.gz``.

        Calibrated when the model stores a calibration (``/summary`` says ``calibrated``).
        """
        with self.memory.request():
            prediction, _ = self._predict(file, Path(ctx.temp_dir), "probabilities")
            target = Path(ctx.temp_dir) / "probabilities.nii.gz"
            return write_nifti(target, prediction.probability.array, like=prediction.probability)

    @bentoml.api
    def conformal(self, file: Path, ctx: bentoml.Context) -> Path:
        """The risk-controlled vessel mask (``uint8``; expected FNR <= the stored alpha).

        Refused (409) for a model without a conformal threshold, before the upload is read.
        """
        return self._uncertainty_map(file, Path(ctx.temp_dir), "conformal")

    @bentoml.api
    def prediction_sets(self, file: Path, ctx: bentoml.Context) -> Path:
        """Conformal prediction sets (``uint8``: 0 background, 1 vessel, 2 uncertain).

        Refused (409) for a model without prediction sets, before the upload is read.
        """
        return self._uncertainty_map(file, Path(ctx.temp_dir), "prediction_sets")

    @bentoml.api
    def entropy(self, file: Path, ctx: bentoml.Context) -> Path:
        """Binary entropy of P(vessel) in bits (``float32``: 0 sure, 1 at P = 0.5)."""
        return self._uncertainty_map(file, Path(ctx.temp_dir), "entropy")

    @bentoml.api
    def summary(self, file: Path, ctx: bentoml.Context) -> VolumeSummary:
        """Vessel voxel count, fraction and volume of a volume, with its geometry and model."""
        start = time.perf_counter()
        with self.memory.request():
            prediction, volume = self._predict(file, Path(ctx.temp_dir), "summary")
            return summarise(
                volume,
                prediction,
                self.model.describe(),
                total_seconds=time.perf_counter() - start,
                head=self.model.predictor.uncertainty,
            )

    def drift_status(self) -> dict[str, Any]:
        """What ``GET /drift`` answers: the latest verdict, ``collecting``, or ``off``."""
        return off_status() if self.drift is None else self.drift.status()

    def _uncertainty_map(self, file: Path, workdir: Path, output: Output) -> Path:
        try:
            require_output(self.model.predictor.uncertainty, output, self.model.source)
        except OutputUnavailable as exc:
            raise BentoMLException(str(exc), error_code=exc.status) from None
        with self.memory.request():
            prediction, _ = self._predict(file, workdir, output)
            found = output_volume(prediction, output)
            return write_nifti(workdir / f"{output}.nii.gz", found.array, like=found)

    def _predict(
        self, file: Path, workdir: Path, endpoint: str, *, task: TaskTracker = UNTRACKED
    ) -> tuple[Prediction, Volume]:
        with span("minivess.request", endpoint=endpoint):
            task.stage("reading")
            try:
                volume = read_upload(file, workdir, max_voxels=self.max_voxels, name=file.name)
            except UploadRejected as exc:
                raise BentoMLException(str(exc), error_code=exc.status) from None
            task.stage("predicting")
            predict = self.model.predictor.predict
            prediction = self._compute(predict, volume, progress=task.windows)
        mask = prediction.mask.array
        PREDICTION_SECONDS.labels(endpoint=endpoint).observe(prediction.seconds)
        INPUT_VOXELS.labels(endpoint=endpoint).observe(mask.size)
        VESSEL_FRACTION.labels(endpoint=endpoint).observe(float(np.count_nonzero(mask)) / mask.size)
        if self.drift is not None:
            self.drift.observe(volume, prediction.probability.array)
        return prediction, volume


def memory_releaser(settings: ServeSettings) -> IdleReleaser:
    """The worker's :class:`IdleReleaser`, started unless ``serve.release_memory_idle_s`` is unset.

    Unset (or without glibc) it is never started: requests are counted, the heap is never
    trimmed (the allocator's own behaviour, for comparison in benchmarks).
    """
    delay = settings.release_memory_idle_s
    if delay is None or not can_release():
        return IdleReleaser()
    return IdleReleaser(delay).start()


def drift_monitor(settings: ServeSettings, head: UncertaintyHead | None) -> DriftMonitor | None:
    """The started drift monitor of ``serve.drift_reference``, or ``None`` when it is unset.

    The drift gauges start at NaN (no verdict), so that a service without a reference, or one
    still collecting, never reports "no drift".

    Raises:
        DataError: The reference is not a readable feature table.
    """
    DRIFT_SHARE.set(float("nan"))
    DRIFT_DETECTED.set(float("nan"))
    DRIFT_WINDOW_ROWS.set(0)
    if settings.drift_reference is None:
        return None
    from minivess.drift.features import read_feature_table

    reference = read_feature_table(settings.drift_reference)
    return DriftMonitor(
        reference,
        source=settings.drift_reference,
        window=settings.drift_window,
        tile=settings.drift_tile,
        calibration=head.calibration if head is not None else None,
        listener=_publish_drift,
    ).start()


def _publish_drift(rows: int, result: DriftResult | None) -> None:
    """Set the drift gauges from the window and the latest result."""
    DRIFT_WINDOW_ROWS.set(rows)
    if result is None:
        return
    DRIFT_SHARE.set(result.share)
    DRIFT_DETECTED.set(float(result.drifted))
    for feature, p_value in result.p_values.items():
        DRIFT_P_VALUE.labels(feature=feature).set(p_value)


def _task_id(ctx: bentoml.Context) -> str | None:
    """The id BentoML gave the running task (``None`` for a direct, synchronous call)."""
    try:
        task_id = getattr(ctx.request.state, "task_id", None)
    except LookupError:  # called outside a request (tests calling the method directly)
        return None
    return task_id if isinstance(task_id, str) else None


def _public_error(exc: Exception) -> str:
    """The message a client may see for a failed task: a 4xx reason, never internals."""
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return str(exc)
    if isinstance(exc, MinivessError):
        return str(exc)
    return "internal error; see the server log"


# mypy sees the decorated class; at run time it is a bentoml.Service.
_service = cast(Any, VesselSegmentation)
# GET endpoints beside BentoML's APIs (which are POST only).
_service.mount_asgi_app(monitor_routes(PROGRESS), path="/")
_service.add_asgi_middleware(RegisterSubmittedTasks, path=SUBMIT_PATH, board=PROGRESS)
_service.add_asgi_middleware(
    UploadGuard,
    paths=UPLOAD_PATHS,
    max_bytes=int(get_settings().serve.max_upload_mb * 2**20),
)


def summarise(
    volume: Volume,
    prediction: Prediction,
    model: dict[str, Any],
    *,
    total_seconds: float,
    head: UncertaintyHead | None = None,
) -> VolumeSummary:
    """The ``/summary`` response for ``volume`` and its prediction.

    Args:
        volume: The input as read.
        prediction: Its prediction.
        model: :meth:`ServedModel.describe` of the model.
        total_seconds: Time from receiving the upload to the prediction.
        head: The model's uncertainty head (its conformal alpha and threshold).
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
        **uncertainty_summary(prediction, head),
    )
