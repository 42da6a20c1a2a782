"""Telemetry is off unless an endpoint is configured; on, it exports over real OTLP/HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from minivess.config.settings import get_settings
from minivess.telemetry import (
    DURATION_METRIC,
    configure_telemetry,
    flush_telemetry,
    shutdown_telemetry,
    span,
    telemetry_config,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
HANG_GUARD_S = 120  # only stops a hung child; no assertion is made about durations
PROBE = """
import json, sys, threading
from minivess.telemetry import span, telemetry_config
with span("minivess.probe", n=1) as current:
    recording = current.is_recording()
config = telemetry_config()
print(json.dumps({
    "recording": recording,
    "config": None if config is None else config.__dict__,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "threads": sorted(t.name for t in threading.enumerate()),
}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "MINIVESS_TELEMETRY__", "MINIVESS_ENV"))
    }
    return {**env, **extra}


def _probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _dead_endpoint() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_off_by_default_installs_nothing() -> None:
    probe = _probe()
    assert probe["config"] is None
    assert probe["recording"] is False
    assert probe["sdk_loaded"] is False  # no provider, no processor, no atexit flush
    assert not [name for name in probe["threads"] if name.startswith("Otel")]


def test_dead_collector_does_not_hold_the_process(tmp_path: Path) -> None:
    endpoint = _dead_endpoint()
    probe = _probe(
        MINIVESS_TELEMETRY__OTLP_ENDPOINT=endpoint, MINIVESS_TELEMETRY__EXPORT_TIMEOUT_S="0.25"
    )
    assert probe["recording"] is True
    assert probe["config"] == {
        "endpoint": endpoint,
        "service_name": "minivess",
        "export_timeout_s": 0.25,
    }
    assert probe["sdk_loaded"] is True


def test_otel_sdk_disabled_wins_over_an_endpoint() -> None:
    probe = _probe(MINIVESS_TELEMETRY__OTLP_ENDPOINT=_dead_endpoint(), OTEL_SDK_DISABLED="true")
    assert probe["config"] is None
    assert probe["sdk_loaded"] is False


def test_standard_otel_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MINIVESS_TELEMETRY__"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "minivess-service")
    monkeypatch.chdir(REPO_ROOT)
    get_settings(reload=True)
    try:
        assert configure_telemetry(export_timeout_s=0.1)
        config = telemetry_config()
        assert config is not None
        assert config.endpoint == "http://127.0.0.1:4318"
        assert config.service_name == "minivess-service"
    finally:
        shutdown_telemetry()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert configure_telemetry() is False
    assert telemetry_config() is None
    shutdown_telemetry()


def test_spans_and_metrics_reach_an_otlp_receiver(otlp_receiver) -> None:
    assert configure_telemetry(
        otlp_receiver.url + "/", export_timeout_s=5, service_name="minivess-e2e"
    )
    try:
        with span("minivess.exported", volumes=2):
            pass
        assert flush_telemetry()
    finally:
        shutdown_telemetry()
    assert [s.name for s in otlp_receiver.spans()] == ["minivess.exported"]
    assert DURATION_METRIC in otlp_receiver.metric_names()


def test_invalid_settings_leave_spans_working_with_telemetry_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "settings.toml").write_text(
        "[default]\ntelemetry.export_timeout_s = -1\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    shutdown_telemetry()
    try:
        with span("minivess.still.works") as current:
            assert not current.is_recording()
        assert telemetry_config() is None
        assert "telemetry off" in caplog.text
        assert "export_timeout_s" in caplog.text
    finally:
        shutdown_telemetry()
