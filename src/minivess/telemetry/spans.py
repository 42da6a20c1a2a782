"""Trace an operation as a span and time it into the shared duration histogram.

Every traced operation (a training epoch, a prediction, a service request) gives one span for
the trace and one observation of ``minivess.operation.duration`` (seconds, labelled
``operation``) for dashboards. With telemetry off, :func:`span` yields the API's invalid
(non-recording) span and does nothing else.

Example:
    >>> with span("minivess.predict", adapter="segresnet", shape=(64, 64, 16)) as current:
    ...     current.set_attribute("vessel_fraction", 0.12)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from minivess.telemetry.setup import duration_histogram, get_tracer, telemetry_config

_SCALARS = (str, bool, int, float)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """Trace the block as span ``name``, a child of the current span, and time it.

    An exception leaves the block with the span marked as failed (exception recorded) and is
    re-raised.

    Args:
        name: Span name, also the ``operation`` label of the duration histogram.
        **attributes: Span attributes; see :func:`span_attributes` for accepted values.

    Yields:
        The span, to add attributes known only at the end (``set_attribute``).
    """
    if telemetry_config() is None:  # off: no span, no context switch, no timing
        yield trace.INVALID_SPAN
        return
    start = time.perf_counter()
    with get_tracer().start_as_current_span(
        name, context=parent_context(), attributes=span_attributes(attributes)
    ) as sp:
        try:
            yield sp
        finally:
            record_duration(name, time.perf_counter() - start)


def parent_context() -> Context | None:
    """The context a new minivess span should start in: the current one if its span is sampled.

    A span that another tracer provider started but does not sample (BentoML wraps every
    request in one, sampled at its ``tracing.sample_rate``, 0 by default) would otherwise make
    the SDK drop every minivess span below it; under such a parent a minivess span starts a
    trace of its own instead.

    Returns:
        ``None`` (the current context) or a fresh, empty context.
    """
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        return None
    return Context()


def record_duration(operation: str, seconds: float) -> None:
    """Add one wall time (seconds) to ``minivess.operation.duration`` for ``operation``."""
    histogram = duration_histogram()
    if histogram is not None:
        histogram.record(seconds, {"operation": operation})


def span_attributes(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``values`` as OpenTelemetry attributes.

    Strings, booleans, ints and floats pass unchanged, sequences become lists (their items
    turned into strings unless all are one scalar type), ``None`` is dropped and anything
    else becomes its ``str``.

    Example:
        >>> span_attributes({"shape": (64, 64, 16), "note": None, "device": "cpu"})
        {'shape': [64, 64, 16], 'device': 'cpu'}
    """
    clean: dict[str, AttributeValue] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, _SCALARS):
            clean[key] = value
        elif isinstance(value, list | tuple):
            clean[key] = _sequence(value)
        else:
            clean[key] = str(value)
    return clean


def _sequence(items: list[Any] | tuple[Any, ...]) -> AttributeValue:
    kinds = {type(item) for item in items}
    if len(kinds) == 1 and kinds <= {str, bool, int, float}:
        return list(items)
    return [str(item) for item in items]
