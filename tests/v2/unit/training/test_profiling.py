"""Profiling handlers: a trace and an operator table, and peak memory per epoch."""

from __future__ import annotations

import json
from pathlib import Path

from minivess.training.handlers.profiling import MemoryMonitor, TorchProfiler

from .test_engine import _trainer


def test_profiler_writes_a_trace_and_memory_lands_in_history(tmp_path: Path) -> None:
    trainer = _trainer(2)
    trainer.attach(MemoryMonitor(), TorchProfiler(tmp_path / "profile", wait=1, warmup=1, active=2))
    state = trainer.run()

    trace = json.loads((tmp_path / "profile" / "trace.json").read_text())
    assert any("conv3d" in str(event.get("name", "")).lower() for event in trace["traceEvents"])
    assert "Self CPU" in (tmp_path / "profile" / "ops.txt").read_text()
    assert all(record["peak_rss_mb"] > 50 for record in state.history)
