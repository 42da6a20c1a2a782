"""Trace a training run: one span for the run, a child span per epoch with loss and metrics.

Spans go wherever :mod:`minivess.telemetry` sends them; with telemetry off (no OTLP endpoint
configured) the handler costs nothing measurable.
"""

from __future__ import annotations

import sys
import time

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from minivess.telemetry import get_tracer, parent_context, record_duration, span_attributes
from minivess.training.engine import Trainer
from minivess.training.events import Event

RUN_SPAN = "minivess.train"
EPOCH_SPAN = "minivess.train.epoch"


class TelemetryHandler:
    """Emit ``minivess.train`` for the run and ``minivess.train.epoch`` for each epoch.

    An epoch span ends after validation and carries the epoch's history record: ``epoch``,
    ``loss``, ``lr``, ``epoch_time_s``, ``val_<metric>`` when validated, and whatever handlers
    attached before this one added (``peak_rss_mb``); plus ``iteration``. The run span carries
    the adapter, precision and device, and at the end ``stop_reason``, ``best_metric`` and
    ``best_epoch``. A failing run marks its open spans as errors with the exception.
    """

    def __init__(self) -> None:
        self._run: trace.Span | None = None
        self._epoch: trace.Span | None = None
        self._epoch_started = 0.0

    def attach(self, trainer: Trainer) -> None:
        """Open the run span on start, one span per epoch, close them at the end."""
        trainer.on(Event.STARTED, self._start_run)
        trainer.on(Event.EPOCH_STARTED, self._start_epoch)
        trainer.on(Event.CHECKPOINT_DUE, self._end_epoch)
        trainer.on(Event.COMPLETED, self._end_run)
        trainer.on(Event.EXCEPTION_RAISED, self._fail)

    def _start_run(self, trainer: Trainer) -> None:
        attributes = {
            "adapter": getattr(trainer.adapter, "name", type(trainer.adapter).__name__),
            "max_epochs": trainer.max_epochs,
            "start_epoch": trainer.state.epoch,
            "precision": trainer.precision,
            "device": str(trainer.device),
            "monitor": trainer.monitor,
        }
        self._run = get_tracer().start_span(
            RUN_SPAN, context=parent_context(), attributes=span_attributes(attributes)
        )

    def _start_epoch(self, trainer: Trainer) -> None:
        parent = trace.set_span_in_context(self._run) if self._run is not None else None
        self._epoch = get_tracer().start_span(
            EPOCH_SPAN, context=parent, attributes={"epoch": trainer.state.epoch + 1}
        )
        self._epoch_started = time.perf_counter()

    def _end_epoch(self, trainer: Trainer) -> None:
        if self._epoch is None:
            return
        record = dict(trainer.state.history[-1]) if trainer.state.history else {}
        record.update(epoch=trainer.state.epoch, iteration=trainer.state.iteration)
        self._epoch.set_attributes(span_attributes(record))
        self._epoch.end()
        self._epoch = None
        record_duration(EPOCH_SPAN, time.perf_counter() - self._epoch_started)

    def _end_run(self, trainer: Trainer) -> None:
        if self._run is None:
            return
        state = trainer.state
        self._run.set_attributes(
            span_attributes(
                {
                    "epochs": state.epoch,
                    "iterations": state.iteration,
                    "stop_reason": state.stop_reason,
                    "best_metric": state.best_metric,
                    "best_epoch": state.best_epoch,
                }
            )
        )
        self._run.end()
        self._run = None

    def _fail(self, trainer: Trainer) -> None:
        error = sys.exc_info()[1]  # fired from inside the loop's ``except`` block
        for open_span in (self._epoch, self._run):
            if open_span is None:
                continue
            if error is not None:
                open_span.record_exception(error)
            open_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            open_span.end()
        self._epoch = self._run = None
