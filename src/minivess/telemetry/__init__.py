"""OpenTelemetry for minivess: traces and metrics over OTLP, off unless an endpoint is set.

Configure with ``telemetry.otlp_endpoint`` (``MINIVESS_TELEMETRY__OTLP_ENDPOINT``) or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``; the first span configures it from those, or call
:func:`configure_telemetry` at start-up. Instrument code with :func:`span`.
"""

from minivess.telemetry.setup import (
    DURATION_METRIC,
    TelemetryConfig,
    configure_telemetry,
    flush_telemetry,
    get_meter,
    get_tracer,
    shutdown_telemetry,
    telemetry_config,
)
from minivess.telemetry.spans import parent_context, record_duration, span, span_attributes

__all__ = [
    "DURATION_METRIC",
    "TelemetryConfig",
    "configure_telemetry",
    "flush_telemetry",
    "get_meter",
    "get_tracer",
    "parent_context",
    "record_duration",
    "shutdown_telemetry",
    "span",
    "span_attributes",
    "telemetry_config",
]
