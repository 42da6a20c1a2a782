"""A tiny model and labelled crops of real VesselNN volumes for evaluation tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from minivess.adapters import ModelAdapter, build_adapter
from minivess.data.io import parse_ome_spacing, read_tiff
from minivess.data.volume import Volume, affine_from_spacing
from minivess.evaluation.evaluate import Case

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
PREDICTION_EXTRA = {
    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {
        "roi_size": [64, 64, 16],
        "overlap": 0.25,
        "sw_batch_size": 1,
        "precision": "fp32",
    },
}
#: (name, x, y) of a 48 x 40 crop with vessels in it.
REAL_CROPS = (("poon2015_plaqueVessels", 0, 96), ("burgess2014_bbbDisruption", 320, 48))


@pytest.fixture
def tiny_adapter() -> ModelAdapter:
    """A seeded SegResNet with two halvings (sides multiples of 4)."""
    torch.manual_seed(0)
    return build_adapter("segresnet", TINY_SEGRESNET)


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_adapter: ModelAdapter) -> Path:
    """The tiny adapter saved with the preprocessing and window training writes."""
    return tiny_adapter.save_checkpoint(tmp_path / "model" / "best.pt", extra=PREDICTION_EXTRA)


@pytest.fixture(scope="session")
def real_cases(vesselnn_dir: Path) -> list[Case]:
    """Two (id, image, label) crops of real volumes, 48 x 40 x Z, with their real voxel size."""
    cases = []
    for name, x, y in REAL_CROPS:
        image = read_tiff(next((vesselnn_dir / "denoised").glob(f"{name}_*")))
        label = read_tiff(next((vesselnn_dir / "labels").glob(f"{name}_*")))
        xml = (vesselnn_dir / "metadata" / f"{name}_metadata.xml.txt").read_bytes()
        spacing = parse_ome_spacing(xml)
        assert spacing is not None
        affine = affine_from_spacing(spacing)
        window = (slice(x, x + 48), slice(y, y + 40), slice(None))
        cases.append(
            (
                name,
                Volume(np.ascontiguousarray(image.array[window]), affine),
                Volume(np.ascontiguousarray(label.array[window]), affine),
            )
        )
    return cases


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take ~1-2 s)."""
    from minivess.tracking.setup import import_mlflow

    mlflow = import_mlflow()
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _empty_store: Path) -> Iterator[str]:
    """Tracking configured to ``<tmp>/mlruns/mlflow.db``; MLflow's and minivess's targets are
    restored afterwards (the same fixture as the tracking tests')."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.tracking import setup
    from minivess.tracking.setup import configure_tracking, import_mlflow

    mlflow = import_mlflow()
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(setup, "_current", setup._Tracking())
    store = tmp_path / "mlruns"
    store.mkdir()
    shutil.copyfile(_empty_store, store / "mlflow.db")
    yield configure_tracking(f"sqlite:///{store / 'mlflow.db'}")
    while mlflow.active_run() is not None:
        mlflow.end_run()
