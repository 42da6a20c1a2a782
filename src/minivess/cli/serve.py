"""``minivess serve``: run the REST service (BentoML) on the host and port of the settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

SERVICE = "minivess.serving.service:VesselSegmentation"
"""Import path of the BentoML service, as ``bentoml serve`` and ``bentofile.yaml`` name it."""


def serve(
    host: str | None = typer.Option(
        None, "--host", help="Interface to bind (default: serve.host, 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, "--port", help="TCP port (default: serve.port)."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model to serve instead of serve.model: MLflow URI (models:/NAME@ALIAS), "
        "checkpoint (.pt) or model folder.",
    ),
    drift_reference: Path | None = typer.Option(
        None,
        "--drift-reference",
        help="Feature table (CSV, e.g. features_reference.csv of minivess drift) that served "
        "volumes are tested against (default: serve.drift_reference; unset: no drift metric).",
    ),
) -> None:
    """Serve vessel segmentation over HTTP: POST /segment, /probabilities, /summary, ..."""
    from minivess.config.settings import get_settings
    from minivess.serving.model import check_model_exists

    settings = get_settings().serve
    env = dict(os.environ)
    if model is not None:
        env["MINIVESS_SERVE__MODEL"] = model
    if drift_reference is not None:
        env["MINIVESS_SERVE__DRIFT_REFERENCE"] = str(drift_reference.absolute())
    # A worker that cannot load its model or reference leaves bentoml serve hanging: check first.
    check_model_exists(model or settings.model)
    reference = drift_reference or settings.drift_reference
    if reference is not None:
        from minivess.drift.features import read_feature_table

        read_feature_table(reference)
    command = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        SERVICE,
        "--host",
        host or settings.host,
        "--port",
        str(port or settings.port),
    ]
    with tempfile.TemporaryDirectory(prefix="minivess-serve-") as state:
        # BentoML keeps async task results in $BENTOML_HOME/task_result.db and deletes that
        # file when a service starts: two services starting on one machine broke each other
        # ("sqlite3.OperationalError: disk I/O error"). Each service keeps its own store.
        env.setdefault("BENTOML_RESULT_STORE", str(Path(state) / "task_result.db"))
        code = subprocess.call(command, env=env)
    if code:
        raise typer.Exit(code)
