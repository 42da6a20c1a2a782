"""Where the time and memory go: a torch.profiler window and per-epoch peak memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch

from minivess.training.engine import Trainer
from minivess.training.events import Event


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


class MemoryMonitor:
    """Adds ``peak_rss_mb`` (and ``peak_cuda_mb`` on a GPU) to every epoch's history record.

    Attach it before tracking handlers so they log the values with the epoch's metrics.
    """

    def attach(self, trainer: Trainer) -> None:
        """Record at the end of every epoch."""
        trainer.on(Event.CHECKPOINT_DUE, self._record)

    def _record(self, trainer: Trainer) -> None:
        record = trainer.state.history[-1]
        record["peak_rss_mb"] = peak_rss_mb()
        if trainer.device.type == "cuda":
            record["peak_cuda_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 1024**2


class TorchProfiler:
    """Profile a window of optimizer steps with ``torch.profiler`` and write the results.

    Writes ``<out_dir>/trace.json`` (open in Perfetto or chrome://tracing) and
    ``<out_dir>/ops.txt`` (operators sorted by total time, with memory).

    Args:
        out_dir: Folder for the trace and the table.
        wait: Steps skipped before profiling (skip start-up effects).
        warmup: Steps traced but discarded.
        active: Steps recorded.
    """

    def __init__(self, out_dir: str | Path, *, wait: int = 2, warmup: int = 1, active: int = 3):
        self.out_dir = Path(out_dir)
        self.schedule = torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1)
        self._profiler: Any = None

    def attach(self, trainer: Trainer) -> None:
        """Start with the run, step with every optimizer step, write on completion."""
        trainer.on(Event.STARTED, self._start)
        trainer.on(Event.ITERATION_COMPLETED, self._step)
        trainer.on(Event.COMPLETED, self._stop)
        trainer.on(Event.EXCEPTION_RAISED, self._stop)

    def _start(self, trainer: Trainer) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=self.schedule,
            profile_memory=True,
            record_shapes=True,
            on_trace_ready=self._write,
        )
        self._profiler.__enter__()

    def _step(self, trainer: Trainer) -> None:
        if self._profiler is not None:
            self._profiler.step()

    def _write(self, profiler: Any) -> None:
        profiler.export_chrome_trace(str(self.out_dir / "trace.json"))
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        (self.out_dir / "ops.txt").write_text(table, encoding="utf-8")

    def _stop(self, trainer: Trainer) -> None:
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None
