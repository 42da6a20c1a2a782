"""Turn OpenTelemetry export on when an OTLP endpoint is configured, and only then.

With no endpoint nothing is installed: no provider, no exporter thread, no ``atexit`` flush,
and the SDK is not even imported; spans are the API's no-op. With one, traces and metrics go
over OTLP/HTTP through a ``BatchSpanProcessor`` and a periodic metric reader whose exports
are bounded by ``telemetry.export_timeout_s``, so an unreachable collector costs at most that
long at process exit instead of the SDK's default of several seconds.

The providers belong to minivess (they are not installed as the OpenTelemetry globals), so
calling :func:`configure_telemetry` again replaces them cleanly, and other libraries' own
tracing is left alone.

Example:
    >>> configure_telemetry("http://127.0.0.1:4318")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace

from minivess.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "minivess"
DEFAULT_SERVICE_NAME = "minivess"
ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME_VAR = "OTEL_SERVICE_NAME"
DISABLED_VAR = "OTEL_SDK_DISABLED"
METRIC_EXPORT_INTERVAL_S = 15.0
"""How often metrics are pushed; matches Prometheus' scrape interval in ``docker/``."""
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
"""Histogram buckets in seconds, from a fast request to a long training epoch (the SDK's
defaults are meant for milliseconds)."""
DURATION_METRIC = "minivess.operation.duration"
"""Histogram of the wall time of every traced operation, labelled ``operation``."""


@dataclass(frozen=True)
class TelemetryConfig:
    """What :func:`configure_telemetry` set up.

    Args:
        endpoint: Base URL of the OTLP/HTTP receiver, or ``None`` for custom exporters.
        service_name: ``service.name`` resource attribute of every span and metric.
        export_timeout_s: Upper bound of one export (spans or metrics).
    """

    endpoint: str | None
    service_name: str
    export_timeout_s: float


@dataclass
class _Telemetry:
    config: TelemetryConfig | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    duration: metrics.Histogram | None = None


_state: _Telemetry | None = None
"""``None`` until the first configuration; a ``_Telemetry`` without providers means off."""
_lock = threading.Lock()


def configure_telemetry(
    endpoint: str | None = None,
    *,
    service_name: str | None = None,
    export_timeout_s: float | None = None,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> bool:
    """Install minivess' tracer and meter providers, or turn telemetry off.

    Calling it again shuts the previous providers down first (flushing what they hold).

    Args:
        endpoint: OTLP/HTTP base URL (``/v1/traces`` and ``/v1/metrics`` are appended);
            ``None`` reads ``telemetry.otlp_endpoint`` from the deployment settings, then
            ``OTEL_EXPORTER_OTLP_ENDPOINT``. ``OTEL_SDK_DISABLED=true`` turns telemetry off
            whatever the endpoint.
        service_name: ``service.name`` of the telemetry; ``OTEL_SERVICE_NAME`` or
            ``"minivess"`` if ``None``.
        export_timeout_s: Bound on each export; ``telemetry.export_timeout_s`` if ``None``.
        span_exporter: Export spans here instead of OTLP (tests use an in-memory exporter).
        metric_reader: Read metrics with this reader instead of a periodic OTLP export.

    Returns:
        Whether telemetry is on.

    Raises:
        ConfigError: Invalid deployment settings (when they have to be read).
    """
    global _state
    custom = span_exporter is not None or metric_reader is not None
    if (endpoint is None and not custom) or export_timeout_s is None:
        settings_endpoint, settings_timeout = _from_settings()
        if endpoint is None and not custom:
            endpoint = settings_endpoint or os.environ.get(ENDPOINT_VAR) or None
        if export_timeout_s is None:
            export_timeout_s = settings_timeout
    name = service_name or os.environ.get(SERVICE_NAME_VAR) or DEFAULT_SERVICE_NAME
    with _lock:
        _shutdown(_state)
        disabled = os.environ.get(DISABLED_VAR, "").strip().lower() == "true"
        if disabled or (endpoint is None and not custom):
            _state = _Telemetry()
            return False
        config = TelemetryConfig(endpoint, name, float(export_timeout_s))
        _state = _install(config, span_exporter, metric_reader)
    return True


def _from_settings() -> tuple[str | None, float]:
    from minivess.config.settings import get_settings

    settings = get_settings().telemetry
    return settings.otlp_endpoint, settings.export_timeout_s


def _install(
    config: TelemetryConfig,
    span_exporter: SpanExporter | None,
    metric_reader: MetricReader | None,
) -> _Telemetry:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    timeout_ms = config.export_timeout_s * 1000
    resource = Resource.create({SERVICE_NAME: config.service_name})
    if span_exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(
            _signal_url(config.endpoint, "traces"), timeout=config.export_timeout_s
        )
    if metric_reader is None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            _signal_url(config.endpoint, "metrics"), timeout=config.export_timeout_s
        )
        metric_reader = PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=METRIC_EXPORT_INTERVAL_S * 1000,
            export_timeout_millis=timeout_ms,
        )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(span_exporter, export_timeout_millis=timeout_ms)
    )
    seconds = View(
        instrument_name=DURATION_METRIC,
        aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
    )
    meter_provider = MeterProvider(
        metric_readers=[metric_reader], resource=resource, views=[seconds]
    )
    duration = meter_provider.get_meter(INSTRUMENTATION_NAME).create_histogram(
        DURATION_METRIC, unit="s", description="Wall time of traced minivess operations"
    )
    return _Telemetry(config, tracer_provider, meter_provider, duration)


def _signal_url(endpoint: str | None, signal: str) -> str:
    if not endpoint:
        raise ValueError("an OTLP endpoint is required without a custom exporter")
    return f"{endpoint.rstrip('/')}/v1/{signal}"


def _shutdown(state: _Telemetry | None) -> None:
    if state is None:
        return
    if state.tracer_provider is not None:
        state.tracer_provider.shutdown()
    if state.meter_provider is not None:
        state.meter_provider.shutdown()


def _current() -> _Telemetry:
    """The active state; the first call configures from settings and the environment.

    Invalid deployment settings leave telemetry off with a warning here, rather than failing
    the prediction or training step that happened to open the first span.
    """
    global _state
    if _state is None:
        try:
            configure_telemetry()
        except ConfigError as exc:
            logger.warning("telemetry off: %s", exc)
            with _lock:
                _state = _Telemetry()
    assert _state is not None
    return _state


def telemetry_config() -> TelemetryConfig | None:
    """The active configuration, or ``None`` when telemetry is off."""
    return _current().config


def get_tracer() -> trace.Tracer:
    """The tracer of minivess spans: a no-op one when telemetry is off."""
    provider = _current().tracer_provider
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(INSTRUMENTATION_NAME)


def get_meter() -> metrics.Meter:
    """The meter of minivess metrics: a no-op one when telemetry is off."""
    provider = _current().meter_provider
    if provider is None:
        return metrics.NoOpMeter(INSTRUMENTATION_NAME)
    return provider.get_meter(INSTRUMENTATION_NAME)


def duration_histogram() -> metrics.Histogram | None:
    """The ``minivess.operation.duration`` histogram, or ``None`` when telemetry is off."""
    return _current().duration


def flush_telemetry(timeout_s: float | None = None) -> bool:
    """Export everything recorded so far; ``True`` if it all went out (or nothing was on).

    Args:
        timeout_s: Bound on the flush; the configured export timeout if ``None``.
    """
    state = _state
    if state is None or state.config is None:
        return True
    millis = int(1000 * (timeout_s or state.config.export_timeout_s))
    ok = True
    if state.tracer_provider is not None:
        ok = state.tracer_provider.force_flush(millis) and ok
    if state.meter_provider is not None:
        ok = state.meter_provider.force_flush(millis) and ok
    return ok


def shutdown_telemetry() -> None:
    """Flush and stop the providers; the next span configures telemetry afresh."""
    global _state
    with _lock:
        _shutdown(_state)
        _state = None
