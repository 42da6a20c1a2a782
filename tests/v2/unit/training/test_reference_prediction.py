"""Regression: a stored checkpoint reproduces its stored reference prediction exactly.

The reference was produced by this module's ``make_reference`` (train -> save -> load ->
predict). Regenerate it deliberately, after a change that is meant to alter predictions, with
``MINIVESS_REGENERATE_REFERENCE=1 uv run pytest <this file>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from minivess.adapters import load_checkpoint
from minivess.config.experiment import compose
from minivess.data.synthetic import make_vessel_volume
from minivess.data.transforms import normalise_intensity
from minivess.training.recipe import train

from .test_recipe import tiny_overrides

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference"
CHECKPOINT = REFERENCE / "segresnet_tiny.pt"
PREDICTION = REFERENCE / "segresnet_tiny_prediction.npz"


def _input() -> torch.Tensor:
    image, _ = make_vessel_volume(shape=(48, 40, 12), seed=123)
    return normalise_intensity(image.array[None], (1.0, 99.8))


def _predict(checkpoint: Path) -> np.ndarray:
    adapter, info = load_checkpoint(checkpoint)
    probs = adapter.predict_volume(
        _input(), roi_size=info.extra["inference"]["roi_size"], precision="fp32"
    )
    return probs[1].numpy()


def make_reference(prepared, tmp_path: Path) -> None:
    result = train(compose(tiny_overrides(prepared)), tmp_path / "reference-run")
    REFERENCE.mkdir(parents=True, exist_ok=True)
    adapter, info = load_checkpoint(result.best_checkpoint)
    keep = {k: v for k, v in info.extra.items() if k != "trainer"}  # weights only: small file
    adapter.save_checkpoint(CHECKPOINT, data_version=info.data_version, extra=keep)
    vessel = _predict(CHECKPOINT)
    np.savez_compressed(PREDICTION, vessel=vessel, mask=(vessel > 0.5).astype(np.uint8))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The reference holds at one thread: more threads split reductions differently, and a
    test that ran earlier in the same worker may have raised the count (benchmarks do)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(one_thread, prepared_synthetic, tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("MINIVESS_REGENERATE_REFERENCE") or not CHECKPOINT.exists():
        make_reference(prepared_synthetic, tmp_path_factory.mktemp("ref"))
    return np.load(PREDICTION)


def test_stored_checkpoint_reproduces_stored_prediction(reference) -> None:
    vessel = _predict(CHECKPOINT)
    np.testing.assert_array_equal((vessel > 0.5).astype(np.uint8), reference["mask"])
    np.testing.assert_allclose(vessel, reference["vessel"], rtol=0, atol=1e-6)


def test_retraining_the_same_config_reproduces_the_reference(
    reference, prepared_synthetic, tmp_path: Path
) -> None:
    result = train(compose(tiny_overrides(prepared_synthetic)), tmp_path / "again")
    vessel = _predict(result.best_checkpoint)
    np.testing.assert_array_equal((vessel > 0.5).astype(np.uint8), reference["mask"])
    np.testing.assert_allclose(vessel, reference["vessel"], rtol=0, atol=1e-5)
