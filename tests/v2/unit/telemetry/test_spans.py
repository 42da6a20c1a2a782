"""Spans: attributes, nesting, failures, and the duration histogram behind every span."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import StatusCode

from minivess.telemetry import DURATION_METRIC, span, span_attributes
from minivess.telemetry.setup import DURATION_BUCKETS_S

from .conftest import Recorded


def test_span_carries_its_attributes_and_resource(recorded: Recorded) -> None:
    with span("minivess.work", volumes=3, shape=(64, 48, 14), note=None) as current:
        current.set_attribute("vessel_fraction", 0.25)
    finished = recorded.span("minivess.work")
    assert dict(finished.attributes or {}) == {
        "volumes": 3,
        "shape": (64, 48, 14),
        "vessel_fraction": 0.25,
    }
    assert finished.resource.attributes["service.name"] == "minivess-test"
    assert finished.status.status_code is StatusCode.UNSET


def test_nested_spans_share_the_trace(recorded: Recorded) -> None:
    with span("minivess.outer"), span("minivess.inner"):
        pass
    outer, inner = recorded.span("minivess.outer"), recorded.span("minivess.inner")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id
    assert inner.context.trace_id == outer.context.trace_id


def test_a_failing_block_marks_the_span_and_reraises(recorded: Recorded) -> None:
    with pytest.raises(ValueError, match="bad volume"), span("minivess.fails"):
        raise ValueError("bad volume")
    failed = recorded.span("minivess.fails")
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


def test_every_span_is_timed_in_seconds_buckets(recorded: Recorded) -> None:
    for _ in range(3):
        with span("minivess.timed"):
            pass
    (point,) = [
        p
        for p in recorded.histogram_points(DURATION_METRIC)
        if p.attributes == {"operation": "minivess.timed"}
    ]
    assert point.count == 3
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS_S
    assert 0 <= point.sum < point.count * DURATION_BUCKETS_S[-1]


def test_attribute_values_become_types_opentelemetry_accepts() -> None:
    class Device:
        def __str__(self) -> str:
            return "cuda:0"

    assert span_attributes(
        {"n": 2, "ok": True, "dims": [1, 2], "mixed": (1, "a"), "device": Device(), "gone": None}
    ) == {"n": 2, "ok": True, "dims": [1, 2], "mixed": ["1", "a"], "device": "cuda:0"}


@pytest.mark.parametrize("sampled", [True, False])
def test_a_foreign_parent_is_followed_only_when_it_is_sampled(
    recorded: Recorded, sampled: bool
) -> None:
    # BentoML wraps each request in a span of its own provider, unsampled by default.
    foreign = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    with (
        foreign.get_tracer("bentoml").start_as_current_span("HTTP POST") as outer,
        span("minivess.request"),
    ):
        pass
    request = recorded.span("minivess.request")
    if sampled:
        assert request.parent is not None
        assert request.parent.span_id == outer.get_span_context().span_id
        assert request.context.trace_id == outer.get_span_context().trace_id
    else:
        assert request.parent is None
