"""Where runs go: point MLflow at a tracking store and check that it answers before a run starts.

MLflow is imported here, on first use, and nowhere at package import: a user who turned
tracking off never pays its import time (seconds on a small machine).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from minivess.errors import ConfigError, MinivessError

PROBE_TIMEOUT_S = 5
"""Seconds the reachability probe of a tracking server waits for an answer (no retries)."""

# A lab tool does not phone home; a user may still turn MLflow's telemetry on explicitly.
# MLflow's tqdm bars would also interleave with minivess's own progress display.
_MLFLOW_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_SQLITE = "sqlite:///"


@dataclass
class _Tracking:
    uri: str | None = None
    artifact_location: str | None = None


_current = _Tracking()


def import_mlflow() -> ModuleType:
    """``mlflow``, imported with telemetry and progress bars off unless the user set them."""
    for key, value in _MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow


def configure_tracking(uri: str | None = None, artifact_location: str | None = None) -> str:
    """Send runs, models and artifacts to ``uri`` from now on, after checking it is usable.

    Args:
        uri: MLflow tracking URI: ``sqlite:///<path>.db`` (embedded, no server), an
            ``http(s)://`` tracking server, or anything else MLflow accepts. ``None`` reads the
            deployment settings (``tracking.uri`` and ``tracking.artifact_location`` of
            ``configs/settings.toml`` or ``MINIVESS_TRACKING__*``), whose default is the
            embedded ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts in
            ``<project>/mlruns/artifacts``.
        artifact_location: Artifact root of experiments created from now on (a path or a URI
            such as ``s3://bucket/prefix``); each experiment gets a sub-folder named after it.
            ``None`` means: the settings' value when ``uri`` is ``None``, an ``artifacts``
            folder beside a SQLite database, or the server's own choice for a server.

    Returns:
        The tracking URI in use.

    Raises:
        MinivessError: The server does not answer within :data:`PROBE_TIMEOUT_S` (the message
            names the URI and how to fix it), or the SQLite folder cannot be created.

    Example:
        >>> configure_tracking(f"sqlite:///{tmp}/mlflow.db")  # doctest: +SKIP
        'sqlite:////tmp/.../mlflow.db'
    """
    if uri is None:
        from minivess.config.settings import get_settings

        settings = get_settings().tracking
        uri = settings.uri
        if artifact_location is None:
            artifact_location = settings.artifact_location
    elif artifact_location is None:
        artifact_location = _artifacts_beside(uri)
    mlflow = import_mlflow()
    _check_store(uri)
    mlflow.set_tracking_uri(uri)
    _current.uri = uri
    _current.artifact_location = _as_uri(artifact_location)
    return uri


def ensure_configured() -> str:
    """The tracking URI in use, configuring it from the deployment settings on first call."""
    if _current.uri is None:
        return configure_tracking()
    import_mlflow()
    return _current.uri


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created under the configured artifact root if missing.

    Raises:
        MinivessError: The experiment exists but was deleted.
    """
    ensure_configured()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_experiment_artifacts(name))
        except MlflowException:  # created meanwhile by a concurrent run
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise MinivessError(
            f"MLflow experiment {name!r} was deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
            "or choose another experiment name"
        )
    return str(experiment.experiment_id)


def _experiment_artifacts(name: str) -> str | None:
    root = _current.artifact_location
    if root is None:
        return None
    return f"{root.rstrip('/')}/{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"


def _artifacts_beside(uri: str) -> str | None:
    """An ``artifacts`` folder next to a SQLite database; servers choose their own."""
    if not uri.startswith(_SQLITE):
        return None
    return (Path(uri.removeprefix(_SQLITE)).parent / "artifacts").as_uri()


def _as_uri(location: str | None) -> str | None:
    if location is None or _URI_SCHEME.match(location):
        return location
    return Path(location).expanduser().resolve().as_uri()


def _check_store(uri: str) -> None:
    if uri.startswith(_SQLITE):
        folder = Path(uri.removeprefix(_SQLITE)).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder of the tracking database {uri}: {exc}; "
                "set tracking.uri (MINIVESS_TRACKING__URI) to a writable place"
            ) from None
    elif uri.startswith(("http://", "https://")):
        _probe_server(uri)


def _probe_server(uri: str) -> None:
    """One quick request, without MLflow's default retries (7, backing off for ~2 minutes)."""
    from mlflow import MlflowClient

    try:
        with http_settings(max_retries=0, timeout_s=PROBE_TIMEOUT_S):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # connection refused, timeout, HTTP error, proxy page: all fatal
        raise MinivessError(
            f"cannot reach the MLflow tracking server at {uri} ({_reason(exc)}); start it "
            "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or fix tracking.uri in "
            "configs/settings.toml or MINIVESS_TRACKING__URI"
        ) from None


def _reason(exc: Exception) -> str:
    """The gist of a failed probe; MLflow folds the whole urllib3 retry story into one line."""
    text = str(exc).strip()
    if "ReadTimeout" in text or "timed out" in text:
        return f"no answer within {PROBE_TIMEOUT_S} s"
    if "NewConnectionError" in text or "Connection refused" in text:
        return "connection refused"
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextmanager
def http_settings(*, max_retries: int, timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP retries and timeout set to these values inside the block, then restored.

    MLflow reads both environment variables on every request.
    """
    quick = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
    }
    saved: dict[str, Any] = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
