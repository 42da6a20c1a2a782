"""A fresh embedded MLflow store per test, and a small checkpoint to log as a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from minivess.adapters import ModelAdapter

# Gaussian, not the default, so the logged model is seen to keep the checkpoint's blending.
INFERENCE = {
    "roi_size": [16, 16, 8],
    "overlap": 0.25,
    "sw_batch_size": 2,
    "precision": "fp32",
    "blend": "gaussian",
}
PREPROCESSING = {"percentile_lower": 1.0, "percentile_upper": 99.0}


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_adapter: ModelAdapter) -> Path:
    """A checkpoint of ``tiny_adapter`` carrying its preprocessing and inference settings."""
    return tiny_adapter.save_checkpoint(
        tmp_path / "best.pt", extra={"inference": INFERENCE, "preprocessing": PREPROCESSING}
    )
