"""Telemetry switched on with the SDK's in-memory exporter and metric reader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from minivess.telemetry import configure_telemetry, flush_telemetry, shutdown_telemetry


@dataclass
class Recorded:
    """What the in-memory exporter and reader received."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        flush_telemetry()
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        matching = [s for s in self.spans() if s.name == name]
        assert len(matching) == 1, [s.name for s in self.spans()]
        return matching[0]

    def histogram_points(self, metric: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
            if isinstance(point, HistogramDataPoint)
        ]


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Telemetry on, exporting into memory; off again (and unconfigured) afterwards."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    assert configure_telemetry(
        span_exporter=exporter, metric_reader=reader, service_name="minivess-test"
    )
    yield Recorded(exporter, reader)
    shutdown_telemetry()
