"""Fixtures shared by the whole suite: the real VesselNN volumes and small synthetic ones."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin ``examples/minivess-unet2d`` installed for real into a folder that
    tests put on ``PYTHONPATH`` (the shared environment stays untouched)."""
    import subprocess
    import sys

    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv must be on PATH to install the example plugin")
    site = tmp_path_factory.mktemp("plugin") / "site"
    example = REPO_ROOT / "examples" / "minivess-unet2d"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-deps",
            "--python",
            sys.executable,
            "--target",
            str(site),
            str(example),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return site


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


#: A seeded SegResNet small enough for unit tests (sides multiples of 4).
TINY_SEGRESNET = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
#: What training stores in a checkpoint for prediction (preprocessing and sliding window).
PREDICTION_EXTRA = {
    "preprocessing": {"percentile_lower": 1.0, "percentile_upper": 99.8},
    "inference": {
        "roi_size": [64, 64, 16],
        "overlap": 0.25,
        "sw_batch_size": 1,
        "precision": "fp32",
        "blend": "constant",
    },
}


@pytest.fixture
def tiny_adapter() -> Any:
    """A freshly seeded tiny SegResNet adapter (random weights, reproducible)."""
    import torch

    from minivess.adapters import build_adapter

    torch.manual_seed(0)
    return build_adapter("segresnet", TINY_SEGRESNET)


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_adapter: Any) -> Path:
    """``tiny_adapter`` saved with the preprocessing and window that training writes."""
    return tiny_adapter.save_checkpoint(tmp_path / "model" / "best.pt", extra=PREDICTION_EXTRA)


@pytest.fixture(scope="session")
def mlflow_template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take ~1-2 s)."""
    from minivess.tracking.setup import import_mlflow

    mlflow = import_mlflow()
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template_store: Path
) -> Iterator[str]:
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
    shutil.copyfile(mlflow_template_store, store / "mlflow.db")
    yield configure_tracking(f"sqlite:///{store / 'mlflow.db'}")
    while mlflow.active_run() is not None:
        mlflow.end_run()


@dataclass(frozen=True)
class OnnxModel:
    """A seeded tiny SegResNet checkpoint, its ONNX export, and the export cache holding it."""

    checkpoint: Path
    onnx: Path
    cache_dir: Path


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """Exported once per test process (the exporter takes ~10 s even for a tiny network).

    Point ``MINIVESS_CACHE_DIR`` at ``cache_dir`` (see :func:`onnx_cache`) and
    ``Predictor.from_source(checkpoint, backend="onnx")`` reuses this export.
    """
    import torch

    from minivess.adapters import build_adapter, load_checkpoint
    from minivess.export import cached_export
    from minivess.inference import PredictionSettings

    root = tmp_path_factory.mktemp("onnx-model")
    torch.manual_seed(0)
    adapter = build_adapter("segresnet", TINY_SEGRESNET)
    checkpoint = adapter.save_checkpoint(root / "best.pt", extra=PREDICTION_EXTRA)
    adapter, info = load_checkpoint(checkpoint)
    cache = root / "cache" / "onnx"  # the layout of default_cache_dir()
    onnx = cached_export(adapter, PredictionSettings.from_checkpoint(info), info, cache_dir=cache)
    return OnnxModel(checkpoint, onnx, cache)


@pytest.fixture
def onnx_cache(onnx_model: OnnxModel, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``MINIVESS_CACHE_DIR`` set so that the default export cache holds ``onnx_model``."""
    monkeypatch.setenv("MINIVESS_CACHE_DIR", str(onnx_model.cache_dir.parent))
    return onnx_model.cache_dir


class OtlpReceiver:
    """A real OTLP/HTTP endpoint on 127.0.0.1 that keeps what is exported to it.

    Args:
        url: Base URL to configure as the OTLP endpoint.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.exports: list[tuple[str, bytes]] = []
        """``(path, protobuf body)`` of every request, e.g. ``("/v1/traces", b"...")``."""

    def spans(self) -> list[Any]:
        """Every span received, as OTLP protobuf ``Span`` messages."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        requests = [
            ExportTraceServiceRequest.FromString(body)
            for path, body in list(self.exports)
            if path == "/v1/traces"
        ]
        scopes = [ss for r in requests for rs in r.resource_spans for ss in rs.scope_spans]
        return [span for scope in scopes for span in scope.spans]

    def metric_names(self) -> set[str]:
        """Names of every metric received."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        requests = [
            ExportMetricsServiceRequest.FromString(body)
            for path, body in list(self.exports)
            if path == "/v1/metrics"
        ]
        return {
            m.name
            for r in requests
            for rm in r.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An :class:`OtlpReceiver` serving in a thread for the test's duration."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    exports: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            exports.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver = OtlpReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    receiver.exports = exports
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
