"""`tracing.enter_span` sets OpenTelemetry's context variable itself (private: found
once, else the API): whichever way, the span is current for the API, for a context
copied into a thread, and the context before it comes back."""

from __future__ import annotations

import contextvars

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from golden_signals import tracing


def test_the_installed_opentelemetry_keeps_its_context_where_enter_span_looks() -> None:
    """When an OpenTelemetry release moves it, this fails (and `enter_span` goes
    through the API meanwhile)."""
    assert tracing._CURRENT is not None


@pytest.fixture(params=["direct", "api"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "api":
        monkeypatch.setattr(tracing, "_CURRENT", None)
    return str(request.param)


def test_a_span_entered_is_current_everywhere_and_left_restores_the_context(way: str) -> None:
    tracer = TracerProvider().get_tracer("t")
    outer, inner = tracer.start_span("outer"), tracer.start_span("inner")
    key = otel_context.create_key("tenant")
    base = otel_context.attach(otel_context.set_value(key, "acme"))
    try:
        first = tracing.enter_span(outer)
        second = tracing.enter_span(inner)
        assert trace.get_current_span() is inner
        assert otel_context.get_value(key) == "acme"  # the rest of the context kept
        copied = contextvars.copy_context()
        assert copied.run(trace.get_current_span) is inner  # as a thread would see it
        tracing.leave_span(second)
        assert trace.get_current_span() is outer
        tracing.leave_span(first)
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert otel_context.get_value(key) == "acme"
    finally:
        otel_context.detach(base)


def test_a_block_left_in_another_context_ends_its_span_and_raises_nothing(way: str) -> None:
    """An async generator's span entered in one task and closed from another: the
    context cannot be restored there (logged, as OpenTelemetry's detach does), but the
    span still ends and the code that left the block gets no new error."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    operation = tracing.create_span(provider.get_tracer("t"), "stream")
    operation.__enter__()
    contextvars.copy_context().run(operation.__exit__, None, None, None)
    assert [span.name for span in exporter.get_finished_spans()] == ["stream"]
    tracing.leave_span(operation._token)  # type: ignore[arg-type] # its own context, restored
