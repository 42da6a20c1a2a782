"""Drift detection: shifted or synthetic volumes against the real ones drift; halves do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minivess.data.io import read_tiff
from minivess.data.synthetic import make_vessel_volume
from minivess.data.volume import Volume
from minivess.drift import IMAGE_FEATURES, detect_drift, feature_table, volume_features
from minivess.drift.features import image_features, model_features, read_feature_table
from minivess.errors import DataError

TILE = 96


@pytest.fixture(scope="module")
def real_volumes(vesselnn_dir: Path) -> list[tuple[str, Volume]]:
    return [
        (path.name.split("_BM4D")[0], read_tiff(path))
        for path in sorted((vesselnn_dir / "denoised").glob("*.tif"))
    ]


@pytest.fixture(scope="module")
def reference(real_volumes: list[tuple[str, Volume]]) -> pd.DataFrame:
    return feature_table(volume_features(v, volume_id=i, tile=TILE) for i, v in real_volumes)


def _shifted(volume: Volume, seed: int) -> Volume:
    """Dimmer, lower-contrast and noisier: a detector gain drop with more shot noise."""
    rng = np.random.default_rng(seed)
    x = np.asarray(volume.array, dtype=np.float32)
    shifted = 0.5 * x + 20.0 + rng.normal(0.0, 8.0, x.shape)
    return volume.with_array(np.clip(shifted, 0, 255).astype(np.uint8))


def test_intensity_shifted_real_volumes_drift(
    real_volumes: list[tuple[str, Volume]], reference: pd.DataFrame, tmp_path: Path
) -> None:
    current = feature_table(
        volume_features(_shifted(v, k), volume_id=i, tile=TILE)
        for k, (i, v) in enumerate(real_volumes[:3])
    )
    result = detect_drift(reference, current, out_dir=tmp_path)
    assert result.drifted
    assert "intensity_p50" in result.drifted_features
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["drifted"] is True
    assert set(saved["p_values"]) == set(IMAGE_FEATURES)
    assert "<html" in (tmp_path / "drift.html").read_text()[:2000].lower()


def test_synthetic_volumes_drift_from_real_ones(reference: pd.DataFrame) -> None:
    volumes = [make_vessel_volume((192, 192, 16), seed=s)[0] for s in range(2)]
    current = feature_table(
        volume_features(v, volume_id=str(k), tile=TILE) for k, v in enumerate(volumes)
    )
    assert detect_drift(reference, current).drifted


def test_two_halves_of_the_real_volumes_do_not_drift(reference: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(reference))
    half = len(order) // 2
    result = detect_drift(reference.iloc[order[:half]], reference.iloc[order[half:]])
    assert not result.drifted
    assert result.share < 0.5


def test_model_features_and_table_round_trip(tmp_path: Path) -> None:
    image, label = make_vessel_volume((64, 64, 8), seed=0)
    prob = (np.asarray(label.array) != 0).astype(np.float32) * 0.9 + 0.05
    table = volume_features(image, volume_id="a", prob=prob, tile=32)
    assert len(table) == 4
    assert {"vessel_fraction_pred", "mean_uncertainty"} <= set(table.columns)
    table.to_csv(tmp_path / "f.csv", index=False)
    assert len(read_feature_table(tmp_path / "f.csv")) == 4
    assert model_features(np.full((4,), 0.5))["mean_uncertainty"] == pytest.approx(1.0)


def test_noise_feature_grows_with_noise() -> None:
    rng = np.random.default_rng(0)
    base = np.tile(np.linspace(0, 200, 64, dtype=np.float32), (64, 8, 1)).transpose(0, 2, 1)
    quiet = image_features(base + rng.normal(0, 1, base.shape), (1.0, 1.0, 5.0))
    loud = image_features(base + rng.normal(0, 10, base.shape), (1.0, 1.0, 5.0))
    assert loud["noise"] > 3 * quiet["noise"]


def test_bad_inputs_are_named() -> None:
    image, _ = make_vessel_volume((32, 32, 8), seed=0)
    with pytest.raises(DataError, match="shape"):
        volume_features(image, volume_id="a", prob=np.zeros((2, 2, 2)))
    small = volume_features(image, volume_id="a", tile=32)
    with pytest.raises(DataError, match="too-few-rows"):
        detect_drift(small, small)
