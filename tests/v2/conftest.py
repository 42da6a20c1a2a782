"""Fixtures shared by the whole suite: the real VesselNN volumes and small synthetic ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# pytest-xdist runs one worker per core: one compute thread each avoids oversubscribing the
# cores (torch reads this at import, and subprocesses started by tests inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _vesselnn_dir() -> Path:
    configured = os.environ.get("MINIVESS_VESSELNN_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "vesselnn"


@pytest.fixture(scope="session")
def vesselnn_dir() -> Path:
    """The six real VesselNN volumes (``$MINIVESS_VESSELNN_DIR`` or ``../shared/data/vesselnn``).

    Missing data skips the test on a developer machine but fails in CI, where it must be present.
    """
    path = _vesselnn_dir()
    if not (path / "denoised").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real VesselNN data not found at {path}; set MINIVESS_VESSELNN_DIR")
        pytest.skip(f"real VesselNN data not found at {path}; set MINIVESS_VESSELNN_DIR")
    return path


@pytest.fixture(scope="session")
def synthetic_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Decathlon-layout folder of four synthetic vessel volumes (64x64x16, seeded)."""
    from minivess.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, n=4, seed=0, shape=(64, 64, 16))
    return root


@pytest.fixture(scope="session")
def prepared_synthetic(synthetic_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The synthetic folder prepared into a canonical dataset with 2-fold splits."""
    from minivess.data.prepare import prepare_dataset
    from minivess.data.splits import save_splits, splits_for_prepared

    out = tmp_path_factory.mktemp("prepared") / "synthetic"
    prepared = prepare_dataset(synthetic_dataset_dir, out)
    save_splits(splits_for_prepared(out, k=2, seed=0), out / "splits.json")
    return prepared
