"""The tracking spool against a real dead endpoint (connection refused) and a real SQLite store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.v2.integration.processes import free_port

from minivess.tracking.buffer import TrackingSpool, deliverer, read_pending


def _metrics(step: int, value: float) -> dict[str, object]:
    return {"kind": "metrics", "step": step, "timestamp": 1_000 + step, "metrics": {"m": value}}


def test_calls_to_a_dead_store_are_kept_in_order_and_delivered_later(
    tracking: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    live = mlflow.MlflowClient(tracking_uri=tracking)
    run_id = live.create_run(live.create_experiment("spool")).info.run_id
    dead = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    spool = TrackingSpool(tmp_path / "spool", run_id, "dead", retry_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="minivess.tracking"):
        sent = [spool.submit(_metrics(step, step / 10), deliverer(dead, run_id)) for step in (1, 2)]
        report = tmp_path / "report.txt"
        report.write_text("kept")
        assert not spool.submit_file(report, "reports", deliverer(dead, run_id))
    report.unlink()
    assert sent == [False, False]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "connection refused" in caplog.records[0].message
    with spool.pending_file.open("a") as fh:
        fh.write('{"kind": "metrics", "st')  # a line cut short by a kill
    assert [r["kind"] for r in spool.pending()] == ["metrics", "metrics", "artifact"]

    assert not spool.flush(deliverer(live, run_id))  # within the retry interval: not tried
    assert spool.flush(deliverer(live, run_id), force=True)
    history = live.get_metric_history(run_id, "m")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(1, 0.1, 1001), (2, 0.2, 1002)]
    assert [f.path for f in live.list_artifacts(run_id, "reports")] == ["reports/report.txt"]
    assert read_pending(spool.directory) == []
    assert not list((spool.directory / "files").iterdir())  # the kept copy is gone


def test_a_request_the_store_refuses_is_raised_not_kept(tracking: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    live = mlflow.MlflowClient(tracking_uri=tracking)
    spool = TrackingSpool(tmp_path / "spool", "0" * 32, tracking)
    with pytest.raises(MlflowException):
        spool.submit(_metrics(1, 0.5), deliverer(live, "0" * 32))
    assert spool.pending() == []
