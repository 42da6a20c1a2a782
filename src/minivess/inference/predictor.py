"""The one prediction path: raw volume in, vessel mask and probability out, geometry untouched.

The CLI (``minivess predict``), evaluation, the REST service and the demo all predict through
:class:`Predictor`, so a volume gets the same normalisation (the training transform, see
:func:`minivess.data.transforms.normalise_intensity`), the same sliding window and the same
argmax wherever it is segmented.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from minivess.adapters import CheckpointInfo, ModelAdapter
from minivess.adapters.inference import WindowProgress, class_mask, window_progress
from minivess.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES, read_volume, write_nifti
from minivess.data.resample import predict_at_spacing
from minivess.data.transforms import normalise_intensity
from minivess.data.volume import Volume
from minivess.errors import ConfigError, DataError
from minivess.inference.runners import Backend, OnnxRunner, Runner, TorchRunner, check_backend
from minivess.inference.settings import PredictionSettings
from minivess.inference.sources import is_onnx_source, load_onnx_source, load_source
from minivess.telemetry import span
from minivess.uncertainty.head import UncertaintyHead

if TYPE_CHECKING:
    from minivess.export.metadata import OnnxMetadata

VESSEL_CLASS = 1
"""Channel of the network output that is P(vessel); class 0 is background."""
MASK_SUFFIX = "_mask.nii.gz"
PROBABILITY_SUFFIX = "_prob.nii.gz"
CONFORMAL_SUFFIX = "_conformal.nii.gz"
SETS_SUFFIX = "_sets.nii.gz"
MI_SUFFIX = "_mi.nii.gz"


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a prediction (for logs, result files and service responses).

    Args:
        source: What the model was loaded from (a path or an MLflow URI), or ``""``.
        adapter: Registry name of the adapter (``"segresnet"``).
        config: The adapter's hyper-parameters.
        data_version: Version of the data it was trained on, if recorded.
        code_version: minivess, git commit, torch and monai versions at training time.
        created_at: When the checkpoint was written (ISO-8601 UTC).
        backend: Runtime that ran the network (``"torch"`` or ``"onnx"``).
    """

    source: str
    adapter: str
    config: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    code_version: dict[str, str | None] = field(default_factory=dict)
    created_at: str = ""
    backend: str = "torch"

    @classmethod
    def from_checkpoint(cls, info: CheckpointInfo, source: str) -> Self:
        """The description of a loaded checkpoint."""
        return cls(
            source, info.adapter, info.config, info.data_version, info.code_version, info.created_at
        )

    @classmethod
    def from_onnx(cls, metadata: OnnxMetadata, source: str) -> Self:
        """The description of an exported ONNX model."""
        return cls(
            source,
            metadata.adapter,
            metadata.config,
            metadata.data_version,
            metadata.code_version,
            metadata.created_at,
            backend="onnx",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    """The segmentation of one volume, on the input's grid.

    Args:
        mask: ``uint8`` argmax class per voxel (1 = vessel), with the input's affine and header.
        probability: ``float32`` P(vessel) per voxel in [0, 1], same geometry.
        seconds: Wall time of normalisation plus sliding-window inference.
        model: The model that predicted.
        conformal_mask: ``uint8`` risk-controlled vessel mask (expected FNR <= the stored
            alpha), when the model stores a conformal threshold.
        prediction_set: ``uint8`` 0 background, 1 vessel, 2 uncertain, when the model stores
            conformal prediction sets.
        calibrated: Whether ``probability`` went through the model's stored calibration.
            ``mask`` is always the model's own argmax: a Platt intercept moves the 0.5 point,
            so ``probability > 0.5`` may then differ from ``mask`` (a temperature keeps it).
        mutual_information: ``float32`` mutual information (nats, in [0, ln 2]) between the
            members of an ensemble model (torch backend): high where they disagree.
    """

    mask: Volume
    probability: Volume
    seconds: float
    model: ModelInfo
    conformal_mask: Volume | None = None
    prediction_set: Volume | None = None
    calibrated: bool = False
    mutual_information: Volume | None = None


class Predictor:
    """Segment raw volumes with a trained model and its own preprocessing and window.

    Build it with :meth:`from_source` (a checkpoint, an exported ``.onnx`` file or an MLflow
    model URI); the constructor takes an adapter or a runner already in memory. The network
    runs in :meth:`probabilities` only, through a :class:`~minivess.inference.runners.Runner`:
    torch (eager fp32 or bf16 autocast) or ONNX Runtime on the exported graph, both with the
    same sliding window and blending.

    Args:
        adapter: The trained network, or a ready runner (e.g. an
            :class:`~minivess.inference.runners.OnnxRunner`).
        settings: Normalisation and sliding-window settings (usually from the checkpoint).
        device: Where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        model: Description of the model, carried into every :class:`Prediction`.
        backend: ``"torch"`` or ``"onnx"`` for an adapter (``"onnx"`` exports it once into the
            export cache, see :func:`minivess.export.cached_export`); ``None`` means torch, or
            the runner's own backend.
        uncertainty: Calibration and conformal results applied to every prediction (read from
            the checkpoint's ``extra["uncertainty"]`` by :meth:`from_source`).

    Raises:
        ConfigError: ``device`` or ``backend`` is unknown or not available here, or
            ``backend`` contradicts the runner given.

    Example:
        >>> predictor = Predictor.from_source("models:/minivess@champion")  # doctest: +SKIP
        >>> predictor.predict_file("stack.tif", "out/")  # doctest: +SKIP
        [PosixPath('out/stack_mask.nii.gz')]
    """

    def __init__(
        self,
        adapter: ModelAdapter | Runner,
        settings: PredictionSettings,
        *,
        device: str = "cpu",
        model: ModelInfo | None = None,
        backend: str | None = None,
        uncertainty: UncertaintyHead | None = None,
    ) -> None:
        self.settings = settings
        self.uncertainty = (
            uncertainty if uncertainty is not None and not uncertainty.empty else None
        )
        self.device = _device(device)
        self.runner = _runner(adapter, settings, self.device, backend)
        self.model = replace(
            model or ModelInfo(source="", adapter=self.runner.adapter_name),
            backend=self.runner.backend,
        )

    @classmethod
    def from_source(
        cls,
        source: str | Path,
        *,
        device: str = "cpu",
        precision: str | None = None,
        backend: str | None = None,
    ) -> Self:
        """Load a model with the settings it was trained with.

        Args:
            source: A minivess checkpoint (``.pt``), a folder holding one, an exported ONNX
                model (``.onnx``, from ``minivess export``), or an MLflow URI
                (``models:/<name>@<alias>``, ``models:/<name>/<version>``,
                ``runs:/<run_id>/<path>``, which may name an ``.onnx`` artifact); see
                :func:`minivess.inference.sources.load_source`.
            device: Where the network runs.
            precision: Override the checkpoint's inference precision (``"fp32"``, ``"bf16"``,
                ``"fp16"``, ``"auto"``); ``None`` keeps it. The ONNX backend runs fp32, or
                bf16 where ``"auto"`` or ``"bf16"`` asks for it on ONNX Runtime's OpenVINO
                provider (see :class:`~minivess.inference.runners.OnnxRunner`).
            backend: ``"torch"`` or ``"onnx"`` (ONNX Runtime; a checkpoint is exported once
                into the export cache). ``None``: ``"onnx"`` for an ``.onnx`` source, else
                ``"torch"``.

        Raises:
            CheckpointError: Not a readable checkpoint or ONNX model (``OnnxExportError``), or
                one without its ``preprocessing`` and ``inference`` settings.
            ConfigError: Unknown device, precision or backend; ``backend="torch"`` for an
                ``.onnx`` source; a precision the ONNX backend's provider cannot run.
            MinivessError: An MLflow URI that names no model.
        """
        chosen = check_backend(backend or ("onnx" if is_onnx_source(source) else "torch"))
        _device(device)  # fail on a bad device before loading anything
        if chosen == "onnx" and precision not in (None, "auto", "fp32", "bf16"):
            raise ConfigError(
                f"the onnx backend runs fp32 or bf16, not {precision!r}; drop the precision "
                "or use backend torch"
            )
        if is_onnx_source(source):
            if chosen != "onnx":
                raise ConfigError(
                    f"{source} is an exported ONNX model, which only the onnx backend runs; "
                    "pass the checkpoint it came from for backend torch"
                )
            graph, metadata = load_onnx_source(source)
            runner = OnnxRunner(
                graph,
                metadata,
                device=device,
                source=Path(str(source)),
                precision=precision or "auto",
            )
            model = ModelInfo.from_onnx(metadata, str(source))
            head = metadata.head
            return cls(runner, metadata.settings, device=str(device), model=model, uncertainty=head)
        adapter, info = load_source(source)
        settings = PredictionSettings.from_checkpoint(info)
        if precision is not None:
            settings = settings.with_precision(precision)
        model = ModelInfo.from_checkpoint(info, str(source))
        head = UncertaintyHead.from_extra(info.extra)
        if chosen == "onnx":
            runner = _onnx_runner(adapter, settings, device, info, precision=precision or "auto")
            return cls(runner, settings, device=str(device), model=model, uncertainty=head)
        return cls(adapter, settings, device=str(device), model=model, uncertainty=head)

    @property
    def backend(self) -> Backend:
        """The runtime running the network (``"torch"`` or ``"onnx"``)."""
        return self.runner.backend

    @property
    def adapter(self) -> ModelAdapter:
        """The torch adapter (the torch backend only).

        Raises:
            ConfigError: The network runs in ONNX Runtime, with no torch module.
        """
        if isinstance(self.runner, TorchRunner):
            return self.runner.adapter
        raise ConfigError(
            "this predictor runs an ONNX graph, which has no torch adapter; load the "
            "checkpoint with backend='torch' for the network itself"
        )

    def probabilities(self, volume: Volume) -> torch.Tensor:
        """Softmax class probabilities ``(classes, H, W, D)`` (float32, CPU) of a raw volume.

        A model with a ``target_spacing_um`` predicts at that voxel size (from the volume's
        affine) and its probabilities are resampled back, so the shape is always the volume's.

        Raises:
            DataError: The volume is not 3D, not numeric, or holds NaN/inf (names the file).
        """
        check_volume(volume)
        preprocessing = self.settings.preprocessing
        image = normalise_intensity(volume.array[None], preprocessing.percentiles)
        # A model trained at another voxel size sees the input resampled there; its output comes
        # back to exactly the input's shape before anything is thresholded.
        return predict_at_spacing(
            lambda x: self.runner.probabilities(x, self.settings.inference),
            image,
            volume.spacing,
            preprocessing.target_spacing_um,
        )

    def predict(self, volume: Volume, *, progress: WindowProgress | None = None) -> Prediction:
        """Vessel mask and probability of a raw volume, on its grid.

        Args:
            volume: Raw intensities as read by :func:`minivess.data.io.read_volume`.
            progress: Called as ``progress(windows_done, windows_total)`` while the sliding
                window runs (see :func:`minivess.adapters.inference.window_progress`).

        Returns:
            The prediction; both volumes keep ``volume``'s affine, header and source.

        Raises:
            DataError: The volume is not 3D, not numeric, or holds NaN/inf (names the file).
        """
        start = time.perf_counter()
        with span(
            "minivess.predict",
            adapter=self.model.adapter,
            backend=self.model.backend,
            shape=volume.array.shape,
            device=str(self.device),
        ):
            with window_progress(progress):
                probs, disagreement = self._probabilities_and_disagreement(volume)
            mask = class_mask(probs).numpy()
            vessel = probs[VESSEL_CLASS].numpy().astype(np.float32, copy=False)
            maps = self.uncertainty.apply(vessel) if self.uncertainty is not None else None
        seconds = time.perf_counter() - start
        return Prediction(
            mask=volume.with_array(mask),
            probability=volume.with_array(maps.probability if maps is not None else vessel),
            seconds=seconds,
            model=self.model,
            conformal_mask=_on_grid(volume, maps.conformal_mask if maps is not None else None),
            prediction_set=_on_grid(volume, maps.prediction_set if maps is not None else None),
            calibrated=self.uncertainty is not None and self.uncertainty.calibration is not None,
            mutual_information=_on_grid(
                volume, None if disagreement is None else disagreement.numpy()
            ),
        )

    def _probabilities_and_disagreement(
        self, volume: Volume
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`probabilities`, and for an ensemble run by torch its members' mutual information.

        The ensemble records the map from the member probabilities it combines, so no member
        runs twice (:func:`minivess.ensemble.disagreement.collect_disagreement`). An exported
        ensemble graph outputs only the combination: no map with the onnx backend.
        """
        if not isinstance(self.runner, TorchRunner) or self.runner.adapter_name != "ensemble":
            return self.probabilities(volume), None
        from minivess.ensemble.disagreement import collect_disagreement, on_grid

        with collect_disagreement() as recorded:
            probs = self.probabilities(volume)
        return probs, on_grid(recorded, probs.shape[1:])

    def predict_file(
        self, path: str | Path, out_dir: str | Path, *, probabilities: bool = False
    ) -> list[Path]:
        """Predict a NIfTI or TIFF file and write ``<stem>_mask.nii.gz`` into ``out_dir``.

        Outputs carry exactly the input's shape and affine (a TIFF's spacing becomes the NIfTI
        voxel size in micrometres) and are written atomically, after the input has been read
        and checked, so a bad input leaves no output.

        Args:
            path: A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.ome.tif`` volume.
            out_dir: Output folder (created if missing).
            probabilities: Also write ``<stem>_prob.nii.gz`` (float32 P(vessel)).

        Returns:
            The files written: the mask, then the probabilities if asked for, then
            ``<stem>_conformal.nii.gz`` and ``<stem>_sets.nii.gz`` when the model stores
            conformal results, then ``<stem>_mi.nii.gz`` (float32 mutual information of the
            members) for an ensemble.

        Raises:
            DataError: The file is missing, unreadable, not 3D, or holds NaN/inf.
        """
        path, out_dir = Path(path), Path(out_dir)
        prediction = self.predict(read_volume(path))
        stem = output_stem(path)
        written = [
            write_nifti(
                out_dir / f"{stem}{MASK_SUFFIX}", prediction.mask.array, like=prediction.mask
            )
        ]
        if probabilities:
            target = out_dir / f"{stem}{PROBABILITY_SUFFIX}"
            written.append(
                write_nifti(target, prediction.probability.array, like=prediction.probability)
            )
        for suffix, extra in (
            (CONFORMAL_SUFFIX, prediction.conformal_mask),
            (SETS_SUFFIX, prediction.prediction_set),
            (MI_SUFFIX, prediction.mutual_information),
        ):
            if extra is not None:
                written.append(write_nifti(out_dir / f"{stem}{suffix}", extra.array, like=extra))
        return written


def check_volume(volume: Volume) -> None:
    """Refuse what the network cannot segment: not 3D, non-numeric, NaN or infinite voxels.

    Raises:
        DataError: Naming ``volume.source`` and the rule (``dimensionality``, ``dtype``,
            ``non-finite``).
    """
    array = np.asarray(volume.array)
    if array.ndim != 3 or min(array.shape, default=0) < 1:
        raise DataError(
            volume.source, "dimensionality", f"expected a 3D volume, got shape {array.shape}"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            volume.source, "dtype", f"expected numeric intensities, got dtype {array.dtype}"
        )
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(volume.source, "dtype", "complex intensities cannot be segmented")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(
                volume.source,
                "non-finite",
                f"{bad} voxel(s) are NaN or infinite; fix or mask them before predicting",
            )


def _on_grid(volume: Volume, array: np.ndarray | None) -> Volume | None:
    """``array`` with ``volume``'s geometry, or ``None``."""
    return None if array is None else volume.with_array(array)


def output_stem(path: Path) -> str:
    """The file name without its volume suffix: ``a.nii.gz`` -> ``a``, ``b.ome.tif`` -> ``b``."""
    name = path.name
    for suffix in sorted((*NIFTI_SUFFIXES, *TIFF_SUFFIXES), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _runner(
    network: ModelAdapter | Runner,
    settings: PredictionSettings,
    device: torch.device,
    backend: str | None,
) -> Runner:
    """The runner for ``network`` on ``device`` with ``backend`` (validated)."""
    if not isinstance(network, ModelAdapter):
        if backend is not None and check_backend(backend) != network.backend:
            raise ConfigError(
                f"backend {backend!r} asked for, but the runner given is {network.backend!r}"
            )
        return network
    if check_backend(backend or "torch") == "onnx":
        return _onnx_runner(network, settings, str(device))
    return TorchRunner(network, device)


def _onnx_runner(
    adapter: ModelAdapter,
    settings: PredictionSettings,
    device: str,
    info: CheckpointInfo | None = None,
    *,
    precision: str = "auto",
) -> OnnxRunner:
    """``adapter`` exported (once, into the cache) and loaded into ONNX Runtime."""
    from minivess.export.onnx import cached_export

    path = cached_export(adapter, settings, info)
    return OnnxRunner.from_file(path, device=device, precision=precision)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {name!r} ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available; use cpu")
    return device
