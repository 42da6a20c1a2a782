"""Real VesselNN volumes scored by a simple per-voxel model, cut into labelled crops.

The conformal and calibration guarantees hold for any model, so the tests use the cheapest
honest one: a logistic model of P(vessel) from the voxel's normalised intensity and a
smoothed copy, fitted on two volumes, then made over-confident (logits times 4) so that
calibration has something to fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from minivess.data.io import read_tiff
from minivess.data.transforms import normalise_intensity
from minivess.uncertainty.validation import Crop, tile_crops

OVERCONFIDENCE = 4.0


def _features(image: np.ndarray) -> np.ndarray:
    x = normalise_intensity(image[None].astype(np.float32), (1.0, 99.8)).numpy()[0]
    return np.stack([x, gaussian_filter(x, sigma=(2, 2, 0.5))], axis=-1)


@pytest.fixture(scope="session")
def real_probability_volumes(vesselnn_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, P(vessel), label)`` of each real volume from an over-confident logistic model."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    data = []
    for path in sorted((vesselnn_dir / "denoised").glob("*_BM4D_denoised.tif")):
        name = path.name.removesuffix("_BM4D_denoised.tif")
        image = read_tiff(path).array
        label = read_tiff(next((vesselnn_dir / "labels").glob(f"{name}_*"))).array != 0
        data.append((name, _features(image), label))
    assert len(data) >= 4, f"expected the six shared volumes in {vesselnn_dir}"
    x_fit = np.concatenate([f.reshape(-1, 2) for _, f, _ in data[:2]])
    y_fit = np.concatenate([y.ravel() for _, _, y in data[:2]])
    pick = rng.choice(len(y_fit), size=100_000, replace=False)
    model = LogisticRegression().fit(x_fit[pick], y_fit[pick])
    out = []
    for name, features, label in data:
        logit = features.reshape(-1, 2) @ model.coef_[0] + model.intercept_[0]
        prob = 1.0 / (1.0 + np.exp(-OVERCONFIDENCE * logit))
        out.append((name, prob.reshape(label.shape).astype(np.float32), label))
    return out


@pytest.fixture(scope="session")
def real_crops(real_probability_volumes: list[tuple[str, np.ndarray, np.ndarray]]) -> list[Crop]:
    """64 x 64 x Z crops of every real volume that hold vessels."""
    crops: list[Crop] = []
    for name, prob, label in real_probability_volumes:
        crops.extend(tile_crops(prob, label, size=(64, 64), source=name))
    return crops
