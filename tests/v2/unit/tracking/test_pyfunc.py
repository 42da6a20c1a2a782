"""The logged pyfunc model predicts volumes of any size exactly like the adapter itself."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from minivess.adapters import ModelAdapter, load_checkpoint, window_blending
from minivess.errors import DataError
from minivess.tracking import TrackedRun, log_model
from minivess.tracking.pyfunc import preprocess


def _raw_volumes(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Raw microscope-like intensities (not normalised)."""
    return np.random.default_rng(seed).gamma(2.0, 40.0, size=shape).astype(np.float32)


def _direct(adapter: ModelAdapter, checkpoint: Path, volume: np.ndarray) -> np.ndarray:
    """What the adapter itself predicts with the settings stored in the checkpoint."""
    extra = load_checkpoint(checkpoint)[1].extra
    inference = extra["inference"]
    with window_blending(inference["blend"]):
        return adapter.predict_volume(
            preprocess(volume, extra["preprocessing"]),
            roi_size=inference["roi_size"],
            overlap=inference["overlap"],
            sw_batch_size=inference["sw_batch_size"],
            precision=inference["precision"],
        ).numpy()


@pytest.fixture
def loaded(tracking: str, checkpoint: Path):
    with TrackedRun("exp", log_system_metrics=False):
        info = log_model(checkpoint)
    return mlflow.pyfunc.load_model(info.model_uri)


@pytest.mark.parametrize("shape", [(1, 1, 20, 24, 9), (2, 1, 33, 17, 12)])
def test_predictions_equal_predict_volume_for_any_size(
    loaded, tiny_adapter: ModelAdapter, checkpoint: Path, shape: tuple[int, ...]
) -> None:
    volumes = _raw_volumes(shape, seed=sum(shape))
    probabilities = loaded.predict(volumes)
    assert probabilities.shape == (shape[0], 2, *shape[2:])
    assert probabilities.dtype == np.float32
    expected = np.stack([_direct(tiny_adapter, checkpoint, volume) for volume in volumes])
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)


def test_preprocessing_matches_the_training_transform() -> None:
    from types import SimpleNamespace

    from minivess.config.data import DataConfig
    from minivess.data.transforms import normalize_transform

    lower, upper = DataConfig.model_fields["intensity_percentiles"].default
    volume = _raw_volumes((1, 12, 10, 6), seed=3)
    training = normalize_transform(SimpleNamespace(intensity_percentiles=(lower, upper)))
    expected = np.asarray(training({"image": volume.copy()})["image"])
    ours = preprocess(volume, {"percentile_lower": lower, "percentile_upper": upper})
    np.testing.assert_array_equal(ours, expected)
    assert (ours.min(), ours.max()) == (0.0, 1.0)


def test_a_single_volume_works_through_the_python_model(loaded, tiny_adapter, checkpoint) -> None:
    volume = _raw_volumes((1, 16, 16, 8), seed=5)
    single = loaded.unwrap_python_model().predict(None, volume)
    expected = _direct(tiny_adapter, checkpoint, volume)
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-6)


def test_the_signature_rejects_wrong_channels_and_the_model_rejects_wrong_ranks(loaded) -> None:
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"[Ss]hape"):
        loaded.predict(np.zeros((1, 3, 8, 8, 8), dtype=np.float32))
    with pytest.raises(DataError, match="input-shape"):
        loaded.unwrap_python_model().predict(None, np.zeros((8, 8, 8), dtype=np.float32))
