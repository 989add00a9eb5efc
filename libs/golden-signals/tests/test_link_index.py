"""Under tail sampling a running span enters the index a batch span's links are found
in only when its ids are read in the process: the middleware's own reads of a
request's server span (the answer's ``traceparent``, the access line, the exemplar)
leave the process as text and cost the index nothing."""

from __future__ import annotations

import io

from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from golden_signals import TailSamplingOptions, instrument
from golden_signals.logs import add_trace_context
from golden_signals.sampling import RecordedSpan, TailSampling
from golden_signals.tracing import format_traceparent, text_ids, traceparent_of


def test_ids_as_text_for_the_outside_do_not_index_and_ids_read_inside_do() -> None:
    sampler = TailSampling([], ratio=0.0, slow_seconds=60.0)
    span = sampler.tracer.start_root_span("GET /items/{item_id}", None)
    outside = format_traceparent(text_ids(span), False)
    assert outside is not None and outside.endswith("-00")
    assert sampler._running == {}
    assert traceparent_of(span, False) == outside  # the same text, read in the process
    assert list(sampler._running) == [span.get_span_context().span_id]
    span.end()
    assert sampler._running == {}
    # Text first, then the context read in the process (a streamed answer's header
    # went out before the app read it): indexed all the same.
    later = sampler.tracer.start_root_span("GET /stream", None)
    assert text_ids(later) is not None and sampler._running == {}
    context = later.get_span_context()
    assert list(sampler._running) == [context.span_id]


def test_the_middleware_indexes_a_server_span_only_when_the_app_reads_its_context() -> None:
    app = FastAPI()
    seen: dict[str, list[int]] = {}

    def running(name: str) -> None:
        """What the index holds after the answer was sent (the span still runs)."""
        seen[name] = list(instrumentation.tail._running)  # type: ignore[union-attr]

    @app.get("/quiet")
    def quiet(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(running, "quiet")
        return {}

    @app.get("/reads")
    def reads(tasks: BackgroundTasks) -> dict[str, int]:
        span_id = trace.get_current_span().get_span_context().span_id
        tasks.add_task(running, "reads")
        return {"span_id": span_id}

    instrumentation = instrument(
        app, log_stream=io.StringIO(), exporter=InMemorySpanExporter(),
        tail_sampling=TailSamplingOptions(ratio=1.0), trace_response_header=True,
    )  # fmt: skip
    tail = instrumentation.tail
    assert tail is not None
    indexed: list[int] = []
    linkable = tail._linkable

    def noting(span: RecordedSpan) -> None:
        indexed.append(span._id)
        linkable(span)

    tail._linkable = noting  # type: ignore[method-assign]
    with TestClient(app) as client:
        quiet = client.get("/quiet")
        assert quiet.headers["traceparent"].endswith("-01")  # kept: an exemplar too
        assert indexed == []  # the header, the access line, the exemplar: none indexed
        answer = client.get("/reads")
    assert seen["quiet"] == []
    assert seen["reads"] == [answer.json()["span_id"]] == indexed
    assert tail._running == {}


def test_the_answers_traceparent_and_a_log_line_set_the_sampled_bit_by_one_rule() -> None:
    # Flags with the W3C "random" bit (0x02) and the sampled bit clear: a ruling sets
    # or clears the sampled bit and keeps the other; no ruling (None), or a value that
    # is no ruling (an app's own 1), leaves the flags as they came. The answer's header
    # once took any truthy value as a ruling while the log line took only a bool.
    ids = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0x02)
    span = trace.NonRecordingSpan(
        SpanContext(int(ids[0], 16), int(ids[1], 16), True, TraceFlags(ids[2]))
    )
    for sampled, written in ((True, "03"), (False, "02"), (None, "02"), (1, "02")):
        header = format_traceparent(ids, sampled)  # type: ignore[arg-type]
        assert header == f"00-{ids[0]}-{ids[1]}-{written}", sampled
        # A log line under that span, carrying the ruling (`trace_sampled`) if any.
        fields = {} if sampled is None else {"trace_sampled": sampled}
        with trace.use_span(span, end_on_exit=False):
            line = add_trace_context(None, "info", fields)
        assert line["trace_flags"] == written, sampled
