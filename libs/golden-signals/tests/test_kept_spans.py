"""A kept request's records become the spans the SDK would have made: the same
attributes, bounded by the same limits (``OTEL_SPAN_ATTRIBUTE_*``), whether or not they
need bounding."""

from __future__ import annotations

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from golden_signals.sampling import Outcome, TailSampling


def _kept(attributes: dict[str, object], limits: SpanLimits | None = None) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    sampler = TailSampling([SimpleSpanProcessor(exporter)], ratio=1.0, slow_seconds=60.0)
    if limits is not None:
        sampler._limits = limits
    span = sampler.tracer.start_root_span("GET /items/{item_id}", None)
    for key, value in attributes.items():
        span.set_attribute(key, value)  # type: ignore[arg-type]
    assert sampler.decide(span, Outcome.OK, 0.01, None) is True
    span.end()
    (finished,) = exporter.get_finished_spans()
    return finished


def test_plain_attributes_are_carried_as_they_are() -> None:
    plain = {"http.route": "/items/{item_id}", "http.response.status_code": 200,
             "retried": False, "ratio": 0.5}  # fmt: skip
    span = _kept(plain)
    assert dict(span.attributes or {}) == plain
    assert span.dropped_attributes == 0 and span.dropped_links == 0 and span.links == ()
    with pytest.raises(TypeError):
        span.attributes["added"] = 1  # type: ignore[index]


def test_attributes_past_the_limits_are_bounded_as_the_sdk_bounds_them() -> None:
    span = _kept({"a": "x" * 50, "b": 1, "c": 2}, SpanLimits(max_span_attributes=2))
    assert len(span.attributes or {}) == 2 and span.dropped_attributes == 1
    span = _kept({"a": "x" * 50}, SpanLimits(max_span_attribute_length=10))
    assert span.attributes == {"a": "x" * 10}


def test_values_the_sdk_cleans_are_cleaned() -> None:
    span = _kept({"tags": ["a", "b"], "raw": b"\x01"})
    assert span.attributes is not None and span.attributes["tags"] == ("a", "b")


class _Text(str):
    """A subclass of str: the SDK keeps it, the fast path does not judge it plain."""


@pytest.mark.parametrize(
    ("attributes", "limits"),
    [
        ({"a": 1, "b": True, "c": 0.5, "d": "x"}, SpanLimits()),
        ({"a": 1, "b": 2}, SpanLimits(max_span_attributes=2)),
        ({"a": 1, "b": 2, "c": 3}, SpanLimits(max_span_attributes=2)),
        ({"a": 1}, SpanLimits(max_span_attributes=0)),
        ({"a": "long text"}, SpanLimits(max_span_attribute_length=4)),
        ({"a": None, "b": b"x", "c": [1, 2], "d": _Text("t")}, SpanLimits()),
        ({"": 1, "b": 2}, SpanLimits()),
    ],
)
def test_a_kept_span_has_the_attributes_the_sdk_would_give_it(
    attributes: dict[str, object], limits: SpanLimits
) -> None:
    expected = BoundedAttributes(
        limits.max_span_attributes, attributes,  # type: ignore[arg-type]
        max_value_len=limits.max_span_attribute_length,
    )  # fmt: skip
    span = _kept(attributes, limits)
    assert dict(span.attributes or {}) == dict(expected)
    assert span.dropped_attributes == expected.dropped
