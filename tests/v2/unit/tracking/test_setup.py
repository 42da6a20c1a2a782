"""Where runs go: settings or explicit URIs, artifact folders, and fast failure on dead servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from minivess.errors import MinivessError
from minivess.tracking import TrackedRun, configure_tracking
from minivess.tracking.setup import ensure_experiment


@pytest.fixture
def fresh_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the ``tracking`` fixture, but leaves choosing the URI to the test."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from minivess.tracking import setup

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(setup, "_current", setup._Tracking())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_tables(db: Path, template: Path) -> None:
    """Start from a database whose tables exist: these tests are about places, not migrations."""
    db.parent.mkdir(parents=True)
    shutil.copyfile(template, db)


def test_default_comes_from_settings_under_the_project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_configuration: None,
    mlflow_template_store: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    _with_tables(tmp_path / "mlruns" / "mlflow.db", mlflow_template_store)
    for key in list(os.environ):
        if key.startswith("MINIVESS_TRACKING__"):
            monkeypatch.delenv(key)
    uri = configure_tracking()
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    with TrackedRun("from-settings", config={"a": 1}, log_system_metrics=False) as run:
        pass
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    run_dirs = list((tmp_path / "mlruns" / "artifacts" / "from-settings").iterdir())
    assert [d.name for d in run_dirs] == [run.run_id]


def test_settings_environment_variables_choose_the_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_configuration: None,
    mlflow_template_store: Path,
) -> None:
    from minivess.config.settings import get_settings

    monkeypatch.chdir(tmp_path)
    _with_tables(tmp_path / "elsewhere" / "runs.db", mlflow_template_store)
    monkeypatch.setenv("MINIVESS_TRACKING__URI", f"sqlite:///{tmp_path}/elsewhere/runs.db")
    monkeypatch.setenv("MINIVESS_TRACKING__ARTIFACT_LOCATION", str(tmp_path / "blobs"))
    get_settings(reload=True)
    try:
        assert configure_tracking() == f"sqlite:///{tmp_path}/elsewhere/runs.db"
        with TrackedRun("env", config={"a": 1}, log_system_metrics=False) as run:
            pass
    finally:
        monkeypatch.undo()
        get_settings(reload=True)
    assert (tmp_path / "blobs" / "env" / run.run_id / "artifacts" / "config.yaml").is_file()


def test_explicit_sqlite_uri_keeps_artifacts_beside_the_database(
    tmp_path: Path, fresh_configuration: None, mlflow_template_store: Path
) -> None:
    db = tmp_path / "deep" / "folder" / "mlflow.db"
    _with_tables(db, mlflow_template_store)
    configure_tracking(f"sqlite:///{db}")
    experiment_id = ensure_experiment("my exp/1")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with TrackedRun("my exp/1", log_system_metrics=False) as run:
        run.log_artifact(note)
    assert ensure_experiment("my exp/1") == experiment_id
    assert (db.parent / "artifacts" / "my_exp_1" / run.run_id / "artifacts" / "note.txt").is_file()


def test_unreachable_server_is_a_one_line_error_naming_the_uri(fresh_configuration: None) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(MinivessError, match="connection refused") as excinfo:
        configure_tracking(uri)
    message = str(excinfo.value)
    assert uri in message
    assert "MINIVESS_TRACKING__URI" in message
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_silent_server_fails_after_the_probe_timeout_not_mlflow_retries(
    fresh_configuration: None,
) -> None:
    from minivess.tracking.setup import PROBE_TIMEOUT_S

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(MinivessError, match=f"no answer within {PROBE_TIMEOUT_S} s"):
            configure_tracking(uri)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the probe's settings are undone


def test_deleted_experiment_says_how_to_restore_it(tracking: str) -> None:
    import mlflow

    experiment_id = ensure_experiment("gone")
    mlflow.MlflowClient().delete_experiment(experiment_id)
    with pytest.raises(MinivessError, match="restore"):
        ensure_experiment("gone")


def test_telemetry_is_off_unless_the_user_turned_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from minivess.tracking.setup import import_mlflow

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    import_mlflow()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    import_mlflow()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_importing_the_package_does_not_import_mlflow() -> None:
    code = "import sys, minivess.tracking; print('mlflow' in sys.modules, 'duckdb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"]
