"""A fresh embedded MLflow store per test, and a small checkpoint to log as a model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from minivess.adapters import ModelAdapter, build_adapter

TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
INFERENCE = {"roi_size": [16, 16, 8], "overlap": 0.25, "sw_batch_size": 2, "precision": "fp32"}
PREPROCESSING = {"percentile_lower": 1.0, "percentile_upper": 99.0}


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take ~1-2 s)."""
    from minivess.tracking.setup import import_mlflow

    mlflow = import_mlflow()
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Iterator[str]:
    """Tracking configured to ``<tmp>/mlruns/mlflow.db`` with artifacts in ``<tmp>/mlruns``.

    MLflow's process-wide URI and minivess's configuration are restored afterwards.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.tracking import setup
    from minivess.tracking.setup import configure_tracking, import_mlflow

    mlflow = import_mlflow()
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(setup, "_current", setup._Tracking())
    store = tmp_path / "mlruns"
    store.mkdir()
    shutil.copyfile(empty_store, store / "mlflow.db")
    yield configure_tracking(f"sqlite:///{store / 'mlflow.db'}")
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def tiny_adapter() -> ModelAdapter:
    """A seeded SegResNet with two halvings (inputs multiples of 4)."""
    torch.manual_seed(0)
    return build_adapter("segresnet", TINY_SEGRESNET)


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_adapter: ModelAdapter) -> Path:
    """A checkpoint of ``tiny_adapter`` carrying its preprocessing and inference settings."""
    return tiny_adapter.save_checkpoint(
        tmp_path / "best.pt", extra={"inference": INFERENCE, "preprocessing": PREPROCESSING}
    )
