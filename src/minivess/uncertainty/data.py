"""Labelled volumes of a prepared dataset with a model's P(vessel): what fitting works on."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivess.evaluation.prepared import prepared_cases, select_ids
from minivess.inference import Predictor
from minivess.inference.predictor import VESSEL_CLASS
from minivess.uncertainty.validation import Crop, tile_crops

CROP = (64, 64)
"""Side (H, W) of the full-depth crops that form calibration and test units."""


@dataclass(frozen=True)
class ScoredVolume:
    """One labelled volume with the model's uncalibrated P(vessel)."""

    id: str
    prob: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def scored_volumes(
    predictor: Predictor,
    dataset_dir: str | Path,
    *,
    fold: int | None,
    subset: str = "val",
    splits_file: str | Path | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> list[ScoredVolume]:
    """Predict the chosen volumes of a prepared dataset (see ``minivess evaluate``'s subsets).

    Raises:
        ConfigError: Invalid subset/fold.
        DataError: Not a prepared dataset, or unreadable volumes.
    """
    from minivess.data.manifest import read_manifest

    dataset = Path(dataset_dir)
    manifest = read_manifest(dataset / "manifest.csv")
    splits = Path(splits_file) if splits_file is not None else None
    ids = select_ids(dataset, manifest, splits_file=splits, fold=fold, subset=subset)
    out = []
    for case_id, image, label in prepared_cases(dataset, manifest, ids):
        prob = predictor.probabilities(image)[VESSEL_CLASS].numpy()
        out.append(ScoredVolume(case_id, prob, np.asarray(label.array) != 0, image.spacing))
        if progress is not None:
            progress(len(out), case_id)
    return out


def crops_of(volumes: Sequence[ScoredVolume], size: tuple[int, int] = CROP) -> list[Crop]:
    """Every full-depth crop of ``size`` holding vessels, over all volumes."""
    crops: list[Crop] = []
    for volume in volumes:
        crops.extend(tile_crops(volume.prob, volume.label, size=size, source=volume.id))
    return crops


def split_crops(crops: Sequence[Crop], *, seed: int = 0) -> tuple[list[Crop], list[Crop]]:
    """A random half of the crops to fit on, and the other half held out to report on."""
    order = np.random.default_rng(seed).permutation(len(crops))
    half = len(order) // 2
    return [crops[i] for i in order[:half]], [crops[i] for i in order[half:]]


def pairs(crops: Sequence[Crop]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(prob, label)`` of each crop."""
    for crop in crops:
        yield crop.prob, crop.label
