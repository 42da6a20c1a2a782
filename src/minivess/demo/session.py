"""The demo's work behind the widgets: find the volume, load the model once, segment, save.

Nothing here imports Gradio, so it is usable (and tested) on its own. Prediction goes through
:class:`minivess.inference.Predictor`, the same path as ``minivess predict``; this module only
chooses the input, caches loaded predictors and writes the mask the user downloads.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from minivess.data.io import NIFTI_SUFFIXES, TIFF_SUFFIXES, read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.demo.views import MASK_OVERLAY, VALUE_MAPS, DisplayRange
from minivess.errors import ConfigError, DataError
from minivess.inference import Prediction, Predictor, check_volume
from minivess.inference.compute import on_compute_thread
from minivess.inference.predictor import MASK_SUFFIX, output_stem
from minivess.inference.runners import check_backend
from minivess.serving.uploads import UploadRejected, read_header
from minivess.uncertainty.conformal import UNCERTAIN

DEFAULT_MAX_VOXELS = 64_000_000
"""Largest volume the demo segments unless told otherwise (``demo.max_voxels``)."""

EXAMPLE_SUBFOLDER = "denoised"
"""Folder of the VesselNN dataset holding the raw volumes offered as examples."""


def example_volumes(folder: Path | None) -> dict[str, Path]:
    """Volume files directly inside ``folder`` by file name, sorted; empty if it is missing.

    Args:
        folder: A folder of ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` or ``.ome.tif`` files,
            e.g. the VesselNN ``denoised/`` folder; ``None`` offers no examples.
    """
    if folder is None or not folder.is_dir():
        return {}
    suffixes = (*NIFTI_SUFFIXES, *TIFF_SUFFIXES)
    files = (p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    return {p.name: p for p in sorted(files)}


def choose_input(upload: str | Path | None, example: str | None, examples: dict[str, Path]) -> Path:
    """The file to segment: the uploaded one if there is one, else the chosen example.

    Raises:
        DataError: Neither given, or an example name that is not offered.
    """
    if upload:
        return Path(upload)
    if example:
        if example not in examples:
            raise DataError(example, "unknown-example", "not one of the example volumes offered")
        return examples[example]
    raise DataError(None, "no-input", "upload a volume (NIfTI or TIFF) or pick an example first")


class PredictorCache:
    """Loaded predictors by (source, backend), the least recently used dropped beyond ``size``.

    Loading a model costs seconds (and an MLflow download for a registry URI); every later
    prediction with the same model reuses it. A failed load is not cached, so a fixed model
    (or a newly promoted champion, after :meth:`clear`) is picked up on the next try.

    Args:
        device: Where every predictor runs (``"cpu"``, ``"cuda"``).
        size: Most predictors kept in memory at once.
    """

    def __init__(self, device: str = "cpu", size: int = 3) -> None:
        if size < 1:
            raise ValueError("the cache must hold at least one predictor")
        self.device = device
        self.size = size
        self._loaded: OrderedDict[tuple[str, str], Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, backend: str = "torch") -> Predictor:
        """The predictor for ``source`` on ``backend``, loading it on first use.

        Raises:
            ConfigError: An empty source, an unknown backend, or one the model cannot run on.
            MinivessError: The model cannot be loaded (see :meth:`Predictor.from_source`).
        """
        source = source.strip()
        if not source:
            raise ConfigError("no model given: enter a checkpoint path or models:/NAME@ALIAS")
        key = (source, check_backend(backend))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            predictor = on_compute_thread(
                Predictor.from_source, source, device=self.device, backend=backend
            )
            self._loaded[key] = predictor
            while len(self._loaded) > self.size:
                self._loaded.popitem(last=False)
            return predictor

    def clear(self) -> None:
        """Forget every loaded predictor (the next request reloads its model)."""
        with self._lock:
            self._loaded.clear()


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One segmented volume, kept per browser session so the slice slider needs no new run.

    Args:
        name: File name of the input, as shown to the user.
        image: The raw volume.
        prediction: Mask and P(vessel) on the input's grid.
        mask_file: The mask written as NIfTI for download.
    """

    name: str
    image: Volume
    prediction: Prediction
    mask_file: Path
    _maps: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def display(self) -> DisplayRange:
        """Grey levels of the whole volume, so every slice is shown on the same scale."""
        return DisplayRange.of(self.image.array)

    def overlay(self, name: str) -> np.ndarray:
        """The mask (:data:`MASK_OVERLAY`) or a value map of :data:`VALUE_MAPS`, computed once.

        Raises:
            DataError: ``name`` is neither.
        """
        if name == MASK_OVERLAY:
            return self.prediction.mask.array
        if name not in VALUE_MAPS:
            known = ", ".join([MASK_OVERLAY, *VALUE_MAPS])
            raise DataError(None, "unknown-overlay", f"{name!r}; choose one of {known}")
        if name not in self._maps:
            self._maps[name] = VALUE_MAPS[name](self.prediction)
        return self._maps[name]

    def summary(self) -> dict[str, Any]:
        """The numbers shown next to the views (JSON-ready)."""
        mask = self.prediction.mask.array
        voxels = int(np.count_nonzero(mask))
        spacing = self.image.spacing
        summary: dict[str, Any] = {
            "volume": self.name,
            "shape": " x ".join(str(n) for n in self.image.shape),
            "spacing_um": " x ".join(f"{s:g}" for s in spacing),
            "vessel_voxels": voxels,
            "vessel_fraction": round(voxels / mask.size, 6),
            "vessel_volume_um3": round(voxels * _voxel_volume(self.image.affine), 1),
            "prediction_s": round(self.prediction.seconds, 3),
            "model": self.prediction.model.source,
            "adapter": self.prediction.model.adapter,
            "backend": self.prediction.model.backend,
        }
        sets = self.prediction.prediction_set
        if sets is not None:  # a conformally calibrated model
            summary["uncertain_voxels"] = int(np.count_nonzero(sets.array == UNCERTAIN))
            conformal = self.prediction.conformal_mask
            if conformal is not None:
                summary["conformal_vessel_voxels"] = int(np.count_nonzero(conformal.array))
        return summary


def _voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel in cubic micrometres: |det| of the affine's 3x3 part."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


class Segmenter:
    """Segments files for the demo and writes each mask into its own download folder.

    Args:
        predictors: Where models are loaded and kept.
        output_dir: Folder for the masks offered for download; a temporary folder removed at
            exit if ``None``.
        max_voxels: Largest volume segmented, checked from the file header before the voxels
            are decoded (the REST service's upload check), so a small compressed file cannot
            inflate into gigabytes.
    """

    def __init__(
        self,
        predictors: PredictorCache,
        output_dir: Path | None = None,
        *,
        max_voxels: int = DEFAULT_MAX_VOXELS,
    ) -> None:
        self.predictors = predictors
        self.max_voxels = max_voxels
        if output_dir is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="minivess-demo-"
            )
            output_dir = Path(self._tmp.name)
        self.output_dir = output_dir

    def segment(self, path: Path, source: str, backend: str = "torch") -> Segmentation:
        """Read ``path``, predict it with the model ``source`` on ``backend``, save the mask.

        The volume is read and checked before the model is loaded, so a bad file fails fast.

        Raises:
            DataError: Not a NIfTI or TIFF volume by its content, unreadable, not 3D, more than
                ``max_voxels`` voxels, non-numeric or non-finite.
            MinivessError: The model cannot be loaded or does not run on ``backend``.
        """
        try:
            read_header(path, self.max_voxels)
        except UploadRejected as exc:
            raise DataError(path, exc.rule, exc.message) from None
        volume = read_volume(path)
        check_volume(volume)
        predictor = self.predictors.get(source, backend)
        prediction = on_compute_thread(predictor.predict, volume)  # see inference.compute
        target = self.output_dir / uuid.uuid4().hex / f"{output_stem(path)}{MASK_SUFFIX}"
        write_nifti(target, prediction.mask.array, like=prediction.mask)
        return Segmentation(path.name, volume, prediction, target)
