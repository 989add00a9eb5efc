"""Tail sampling: a request's trace is kept or dropped once its answer is known.

With ``TRACE_SAMPLE_RATIO=0`` only the traces that matter reach the exporter: a
failure, a refusal, a timeout, a slow request, a caller's sampled ``traceparent`` —
each as a whole span tree with its parents, times and status — and a healthy, fast
request sends nothing. What the response header, the log line, the exemplars and
``traces_kept_total`` say matches what was exported.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import tracemalloc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from golden_signals.sampling import (
    KEPT_MEMORY,
    MAX_RUNNING_SPANS,
    MAX_SPANS_PER_TRACE,
    Outcome,
    TailSampling,
    http_outcome,
    parent_sampled,
)
from golden_signals.tracing import hex_ids, trace_id_of, traceparent_of
from inference_gateway.app import create_app
from tests import scrape
from tests.collector import otlp_receiver
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    controlled_loader,
    json_log_capture,
    make_settings,
    ready_client,
)
from tests.images import cat_jpeg

JPEG = {"content-type": "image/jpeg"}
#: Far above anything a test request takes: only what the test makes slow is slow.
NEVER_SLOW_MS = 600_000.0
STAGES = {"preprocess_image", "model_inference", "queue_wait", "forward_pass"}


@contextmanager
def traced(
    backend: ControlledBackend, **settings: Any
) -> Iterator[tuple[TestClient, InMemorySpanExporter, Any]]:
    """An app over ``backend`` whose exported spans go to memory, with JSON logs."""
    exporter = InMemorySpanExporter()
    base: dict[str, Any] = {"trace_sample_ratio": 0.0, "trace_slow_ms": NEVER_SLOW_MS}
    app = create_app(
        make_settings(**{**base, **settings}),
        model_loader=controlled_loader(backend),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    with json_log_capture() as logs, TestClient(app, raise_server_exceptions=False) as client:
        ready_client(client)
        exporter.clear()
        yield client, exporter, logs


def _trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def _trace_of(response: Any) -> str:
    return str(response.headers["traceparent"].split("-")[1])


def _flag(response: Any) -> bool:
    """The sampled bit of the response's traceparent."""
    return bool(int(response.headers["traceparent"].rsplit("-", 1)[1], 16) & 0x01)


def _line(logs: Any, trace_id: str) -> dict[str, Any]:
    lines = [json.loads(x) for x in logs.getvalue().splitlines() if x.startswith("{")]
    (line,) = [
        x for x in lines if x.get("trace_id") == trace_id and x.get("endpoint") == "/predict"
    ]
    return line


def _whole_tree(spans: list[ReadableSpan], status: int) -> None:
    """The server span and its stages, parented within the trace, times in order."""
    by_id = {s.context.span_id: s for s in spans}
    (server,) = [s for s in spans if s.name == "POST /predict"]
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == status
    for span in spans:
        if span is not server:
            assert span.parent is not None and span.parent.span_id in by_id, span.name
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert server.start_time <= span.start_time and span.end_time <= server.end_time  # type: ignore[operator]
    if status >= 500:
        assert server.status.status_code is StatusCode.ERROR


def test_a_healthy_fast_request_sends_nothing_and_says_so() -> None:
    with traced(ControlledBackend()) as (client, exporter, logs):
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert response.status_code == 200
        trace_id = _trace_of(response)
        assert response.json()["trace_id"] == trace_id  # still correlates everything
        assert not _flag(response)
        assert exporter.get_finished_spans() == ()
        line = _line(logs, trace_id)
        assert line["trace_sampled"] is False and line["trace_flags"] == "00"  # as the header
        exposition = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert trace_id not in exposition.text  # no exemplar leads to it
        samples = scrape.parse(client.get("/metrics").text)
        assert scrape.total(samples, "traces_kept_total") == 0


def test_a_failed_request_is_kept_whole() -> None:
    backend = ControlledBackend()
    backend.fail_with = RuntimeError("the model broke")
    with traced(backend, model_warmup=False) as (client, exporter, logs):
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert response.status_code == 500
        trace_id = _trace_of(response)
        assert _flag(response)
        spans = _trace(exporter, trace_id)
        _whole_tree(spans, 500)
        assert {"preprocess_image", "model_inference"} <= {s.name for s in spans}
        line = _line(logs, trace_id)
        assert line["trace_sampled"] is True and line["trace_flags"] == "01"
        exposition = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert f'trace_id="{trace_id}"' in exposition.text  # its exemplar leads somewhere
        samples = scrape.parse(client.get("/metrics").text)
        assert scrape.value(samples, "traces_kept_total", reason="error") == 1


def test_a_refused_request_is_kept() -> None:
    with traced(ControlledBackend()) as (client, exporter, _):
        client.portal.call(client.app.state.registry.begin_drain)  # type: ignore[union-attr,attr-defined]
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert response.status_code == 503
        _whole_tree(_trace(exporter, _trace_of(response)), 503)
        samples = scrape.parse(client.get("/metrics").text)
        assert scrape.value(samples, "traces_kept_total", reason="refused") == 1


def test_a_timed_out_request_is_kept_with_its_stages() -> None:
    backend = ControlledBackend(blocked=True)
    with traced(backend, model_warmup=False) as (client, exporter, _):
        response = client.post(
            "/predict", content=cat_jpeg(), headers={**JPEG, "x-request-timeout-ms": "200"}
        )
        backend.release.set()
        assert response.status_code == 504
        spans = _trace(exporter, _trace_of(response))
        _whole_tree(spans, 504)
        assert "preprocess_image" in {s.name for s in spans}


def test_a_slow_request_is_kept() -> None:
    backend = ControlledBackend(blocked=True)
    with traced(backend, model_warmup=False, trace_slow_ms=1.0) as (client, exporter, logs):
        answers: list[Any] = []
        thread = threading.Thread(
            target=lambda: answers.append(client.post("/predict", content=cat_jpeg(), headers=JPEG))
        )
        thread.start()
        assert backend.entered.wait(30)
        time.sleep(0.01)  # held in the model past TRACE_SLOW_MS (1 ms)
        backend.release.set()
        thread.join(timeout=30)
        (response,) = answers
        assert response.status_code == 200 and _flag(response)
        spans = _trace(exporter, _trace_of(response))
        _whole_tree(spans, 200)
        assert {s.name for s in spans} >= STAGES
        assert _line(logs, _trace_of(response))["trace_sampled"] is True
        samples = scrape.parse(client.get("/metrics").text)
        assert scrape.value(samples, "traces_kept_total", reason="slow") == 1


def test_a_sampled_traceparent_is_always_kept_and_continued() -> None:
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    with traced(ControlledBackend()) as (client, exporter, _):
        sampled = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={**JPEG, "traceparent": f"00-{caller}-00f067aa0ba902b7-01"},
        )
        assert _trace_of(sampled) == caller and _flag(sampled)
        _whole_tree(_trace(exporter, caller), 200)
        other = "5bf92f3577b34da6a3ce929d0e0e4737"
        unsampled = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={**JPEG, "traceparent": f"00-{other}-00f067aa0ba902b7-00"},
        )
        assert _trace_of(unsampled) == other and not _flag(unsampled)
        assert _trace(exporter, other) == []


def test_with_ratio_1_every_request_is_exported() -> None:
    with traced(ControlledBackend(), trace_sample_ratio=1.0) as (client, exporter, _):
        responses = [client.post("/predict", content=cat_jpeg(), headers=JPEG) for _ in range(3)]
        for response in responses:
            assert _flag(response)
            _whole_tree(_trace(exporter, _trace_of(response)), 200)
        samples = scrape.parse(client.get("/metrics").text)
        assert scrape.value(samples, "traces_kept_total", reason="ratio") == 3


def test_a_batch_span_is_exported_when_any_of_its_requests_is_kept() -> None:
    """Two requests share one forward pass: one arrives with a sampled traceparent, the
    other unsampled. The batch's span is exported (it is linked to both); a batch of
    unsampled requests alone exports nothing."""
    backend = ControlledBackend(blocked=True)
    kept, dropped = "1" * 32, "2" * 32
    with traced(backend, model_warmup=False, max_batch_size=2, max_batch_delay_ms=1000.0) as (
        client,
        exporter,
        _,
    ):
        answers: dict[str, Any] = {}

        def send(trace_id: str, flag: str) -> None:
            parent = f"00-{trace_id}-00f067aa0ba902b7-{flag}"
            answers[trace_id] = client.post(
                "/predict", content=cat_jpeg(), headers={**JPEG, "traceparent": parent}
            )

        threads = [
            threading.Thread(target=send, args=(kept, "01")),
            threading.Thread(target=send, args=(dropped, "00")),
        ]
        for thread in threads:
            thread.start()
        assert backend.entered.wait(30)
        backend.release.set()
        for thread in threads:
            thread.join(timeout=30)
        assert backend.batch_sizes[-1] == 2
        batches = [s for s in exporter.get_finished_spans() if s.name == "inference_batch"]
        (batch,) = batches
        assert {f"{link.context.trace_id:032x}" for link in batch.links} == {kept, dropped}
        assert _trace(exporter, dropped) == []
        exporter.clear()
        backend.batch_sizes.clear()
        threads = [threading.Thread(target=send, args=(t, "00")) for t in ("3" * 32, "4" * 32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert exporter.get_finished_spans() == ()


def test_head_sampling_when_the_standard_sampler_is_set() -> None:
    with traced(ControlledBackend(), otel_traces_sampler="always_on") as (client, exporter, logs):
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert _flag(response)
        _whole_tree(_trace(exporter, _trace_of(response)), 200)
        assert "trace_sampled" not in _line(logs, _trace_of(response))
        assert client.app.state.telemetry.tail is None  # type: ignore[attr-defined]


# --- the rule and the holding processor alone ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, Outcome.OK), (404, Outcome.OK), (499, Outcome.OK), (500, Outcome.ERROR),
     (503, Outcome.REFUSED), (504, Outcome.TIMEOUT)],
)  # fmt: skip
def test_http_outcomes(status: int, outcome: Outcome) -> None:
    assert http_outcome(status) is outcome


@pytest.mark.parametrize(
    ("header", "sampled"),
    [(None, False), ("00-" + "a" * 32 + "-" + "b" * 16 + "-01", True),
     ("00-" + "a" * 32 + "-" + "b" * 16 + "-00", False), ("garbage", False),
     ("00-" + "a" * 32 + "-" + "b" * 16 + "-zz", False)],
)  # fmt: skip
def test_parent_sampled_reads_the_flag(header: str | None, sampled: bool) -> None:
    assert parent_sampled(header) is sampled


def _sampler(ratio: float = 0.0, slow_seconds: float = 60.0) -> tuple[TailSampling, Any]:
    exporter = InMemorySpanExporter()
    sampler = TailSampling([SimpleSpanProcessor(exporter)], ratio=ratio, slow_seconds=slow_seconds)
    return sampler, exporter


def test_the_rule_keeps_by_ratio_from_its_random_source() -> None:
    rule, _ = _sampler(ratio=0.5, slow_seconds=1.0)
    rule.random = lambda: 0.4
    assert rule.reason(Outcome.OK, 0.0, False) == "ratio"
    rule.random = lambda: 0.6
    assert rule.reason(Outcome.OK, 0.0, False) is None
    assert rule.reason(Outcome.OK, 2.0, False) == "slow"
    assert rule.reason(Outcome.OK, 0.0, True) == "parent_sampled"
    assert rule.reason(Outcome.TIMEOUT, 0.0, False) == "timeout"


def _raised(exc: Exception) -> Exception:
    """``exc`` with a traceback, as an exception that was raised has."""
    try:
        raise exc  # noqa: TRY301 - raised to get a traceback
    except Exception as caught:
        return caught


def test_a_kept_record_becomes_the_span_it_stands_for() -> None:
    """What a request recorded reaches the exporter as the SDK would have made it: ids,
    parents, kind, times, attributes, events, links, status; nothing after the end."""
    sampler, exporter = _sampler()
    tracer = sampler.tracer
    batch = tracer.start_span("elsewhere", context=Context())
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.route", "/x")
        child = tracer.start_span("stage", attributes={"a": 1}, start_time=10, links=None)
        child.add_link(batch.get_span_context(), {"why": "batched"})
        child.set_attributes({"b": "two"})
        child.record_exception(_raised(ValueError("bad")))
        child.set_status(StatusCode.ERROR, "broken")
        child.end(end_time=20)
        child.set_attribute("late", True)  # ignored: ended
        server.update_name("GET /y")
        server.set_status(Status(StatusCode.OK))
        server.set_status(Status(StatusCode.ERROR))  # ignored: OK is final
        assert sampler.decide(server, Outcome.ERROR, 0.0, None) is True
        assert [s.name for s in exporter.get_finished_spans()] == ["stage"]  # root: on end
    stage, root = exporter.get_finished_spans()
    assert root.name == "GET /y" and root.kind is SpanKind.SERVER and root.parent is None
    assert root.status.status_code is StatusCode.OK
    assert stage.parent == root.context and stage.context.trace_id == root.context.trace_id
    assert (stage.start_time, stage.end_time) == (10, 20)
    assert dict(stage.attributes or {}) == {"a": 1, "b": "two"}
    assert stage.status.status_code is StatusCode.ERROR and stage.status.description == "broken"
    (event,) = stage.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])
    (link,) = stage.links
    assert link.context == batch.get_span_context()
    assert stage.context.trace_flags.sampled and not stage.context.is_remote


def test_a_request_holds_a_bounded_number_of_spans() -> None:
    sampler, exporter = _sampler()
    server = sampler.tracer.start_span("server")
    context = trace.set_span_in_context(server)
    for _ in range(MAX_SPANS_PER_TRACE + 50):
        sampler.tracer.start_span("stage", context=context).end()
    sampler.decide(server, Outcome.ERROR, 0.0, None)
    server.end()
    assert len(exporter.get_finished_spans()) == MAX_SPANS_PER_TRACE + 1


def test_running_spans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans started and never ended (a bug) cannot grow the running index for ever."""
    monkeypatch.setattr("golden_signals.sampling.MAX_RUNNING_SPANS", 8)
    sampler, _ = _sampler()
    for _ in range(50):
        sampler.tracer.start_span("orphan").get_span_context()
    assert len(sampler._running) == 8


def test_only_spans_whose_ids_were_read_are_indexed_for_links() -> None:
    """A link names a span by the ids its context gives: a span nobody asked for its
    context cannot be linked to, so it costs the index nothing; one whose context was
    read is found by a batch span that links to it, and leaves the index as it ends."""
    sampler, _ = _sampler()
    unread = sampler.tracer.start_span("unread")
    read = sampler.tracer.start_span("read")
    context = read.get_span_context()
    assert list(sampler._running) == [context.span_id]
    batch = sampler.tracer.start_span("batch", links=[trace.Link(context)])
    assert batch.linked == (read,)
    read.end()
    unread.end()
    assert context.span_id not in sampler._running


def test_a_batch_linked_through_a_traceparent_string_is_kept_with_its_request() -> None:
    """Ids read as text (the ``traceparent`` handed to an in-process consumer, which
    extracts it and links its batch span to it) name the request just as its context
    does: the batch finds the request, and is kept with it."""
    sampler, exporter = _sampler()
    request = sampler.tracer.start_span("request", kind=SpanKind.SERVER)
    carrier = {"traceparent": traceparent_of(request)}
    linked = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    batch = sampler.tracer.start_span(
        "batch", context=Context(), links=[trace.Link(linked.get_span_context())]
    )
    assert batch.linked == (request,)
    batch.end()
    sampler.decide(request, Outcome.ERROR, 0.0, None)
    request.end()
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["batch", "request"]


def test_a_record_with_invalid_ids_has_no_ids_to_log_or_send() -> None:
    """An id generator that gives a zero id makes an invalid span: no ``traceparent``,
    no trace id in logs or exemplars, as its `SpanContext` says."""

    class Zeros(RandomIdGenerator):
        def generate_span_id(self) -> int:
            return 0

    sampler = TailSampling([], ratio=0.0, slow_seconds=60.0, ids=Zeros())
    span = sampler.tracer.start_span("zero")
    assert not span.get_span_context().is_valid
    assert hex_ids(span) is None and traceparent_of(span) is None and trace_id_of(span) is None


def test_the_running_index_holds_at_its_default_cap_and_so_does_memory() -> None:
    """At the default cap (`MAX_RUNNING_SPANS`, not a smaller one patched in): spans
    started and never ended fill the index up to it, then the oldest are forgotten, and
    as many again leave the memory the sampler holds where it was."""
    sampler, _ = _sampler()

    def orphans(count: int) -> tuple[int, int]:
        """Start ``count`` spans never ended; the span ids of the first and the last."""
        first = sampler.tracer.start_span("orphan").get_span_context().span_id
        for _ in range(count - 2):
            sampler.tracer.start_span("orphan").get_span_context()  # linkable: indexed
        last = sampler.tracer.start_span("orphan").get_span_context().span_id
        return first, last

    tracemalloc.start()
    try:
        oldest, _ = orphans(MAX_RUNNING_SPANS)
        assert len(sampler._running) == MAX_RUNNING_SPANS and oldest in sampler._running
        full = tracemalloc.get_traced_memory()[0]
        _, newest = orphans(MAX_RUNNING_SPANS)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(sampler._running) == MAX_RUNNING_SPANS
    assert oldest not in sampler._running and newest in sampler._running
    # The index was full already: the second round replaced entries, it did not add
    # (without the cap it would double; the dict's own churn is a few per cent).
    assert after - full < 0.25 * full, (full, after)


def test_the_spans_remembered_of_kept_requests_hold_at_their_default_cap() -> None:
    """`KEPT_MEMORY` spans of kept requests are remembered for late batch spans; the
    oldest go beyond it."""
    sampler, exporter = _sampler()
    first = None
    for _ in range(KEPT_MEMORY + 100):
        server = sampler.tracer.start_span("server")
        stage = sampler.tracer.start_span("stage", context=trace.set_span_in_context(server))
        stage.end()
        first = first or stage.get_span_context().span_id
        sampler.decide(server, Outcome.ERROR, 0.0, None)  # kept
        server.end()
    assert len(sampler._kept_spans) == KEPT_MEMORY
    assert first not in sampler._kept_spans
    assert len(exporter.get_finished_spans()) == 2 * (KEPT_MEMORY + 100)  # all exported


@pytest.mark.parametrize(("ratio", "slow_seconds", "kept"), [(0.0, 60.0, 0), (1.0, 60.0, 1),
                                                             (0.0, 0.0, 1)])  # fmt: skip
def test_a_root_nobody_decides_on_is_judged_as_it_ends(
    ratio: float, slow_seconds: float, kept: int
) -> None:
    sampler, exporter = _sampler(ratio, slow_seconds)
    child = sampler.tracer.start_span("child", context=trace.set_span_in_context(
        root := sampler.tracer.start_span("background")))  # fmt: skip
    child.end()
    root.end(end_time=root._start + 1_000_000)
    assert len(exporter.get_finished_spans()) == 2 * kept


@pytest.mark.parametrize(("flags", "kept"), [("01", 1), ("00", 0)])
def test_a_root_nobody_decides_on_follows_its_remote_parents_sampled_flag(
    flags: str, kept: int
) -> None:
    """A local root started under a caller's context (a consumer's message) and ended
    undecided is kept when that caller sampled its trace, as a request would be."""
    sampler, exporter = _sampler(0.0, 60.0)
    caller = {"traceparent": f"00-{'7' * 32}-00f067aa0ba902b7-{flags}"}
    context = TraceContextTextMapPropagator().extract(caller)
    sampler.tracer.start_span("consume", context=context).end()
    assert len(exporter.get_finished_spans()) == kept


def test_spans_of_the_providers_own_tracer_pass_through() -> None:
    sampler, exporter = _sampler()
    provider = TracerProvider()
    provider.add_span_processor(sampler)
    provider.get_tracer("t").start_span("plain").end()
    assert [s.name for s in exporter.get_finished_spans()] == ["plain"]
    provider.shutdown()


def test_requests_sharing_a_trace_are_decided_one_by_one() -> None:
    """A caller sends two requests under one unsampled trace id: the first is healthy
    (dropped), the second fails — and is kept whole, its stages included."""
    backend = ControlledBackend()
    caller = "6" * 32
    parent = {"traceparent": f"00-{caller}-00f067aa0ba902b7-00"}
    with traced(backend, model_warmup=False) as (client, exporter, _):
        healthy = client.post("/predict", content=cat_jpeg(), headers={**JPEG, **parent})
        assert healthy.status_code == 200 and exporter.get_finished_spans() == ()
        backend.fail_with = RuntimeError("broken")
        failed = client.post("/predict", content=cat_jpeg(), headers={**JPEG, **parent})
        assert failed.status_code == 500
        spans = _trace(exporter, caller)
        _whole_tree(spans, 500)
        assert {"preprocess_image", "model_inference"} <= {s.name for s in spans}


def test_a_requests_records_are_freed_as_soon_as_it_is_done() -> None:
    """No reference cycles: a request's records (and a batch's) go when the last
    reference does, not at the next run of the cyclic garbage collector, whose pauses
    grew with every request while the server span referred to itself."""
    sampler, _ = _sampler()
    tracer = sampler.tracer
    gc.collect()
    gc.disable()
    try:
        server = tracer.start_span("server")
        with trace.use_span(server):
            stage = tracer.start_span("stage")
            batch = tracer.start_span(
                "batch", context=Context(), links=[trace.Link(stage.get_span_context())]
            )
            batch.end()  # waits on the request
            stage.end()
        sampler.decide(server, Outcome.OK, 0.0, None)
        server.end()
        alive = [weakref.ref(server), weakref.ref(stage), weakref.ref(batch)]
        del server, stage, batch
        assert [ref() for ref in alive] == [None, None, None]
    finally:
        gc.enable()


def test_over_real_otlp_a_failed_request_arrives_as_a_tree_and_a_healthy_one_not_at_all() -> None:
    """What the collector receives: the failed request's spans, rebuilt from records,
    as one tree (parents, nested times, ERROR status, the exception event), its batch
    span linked to it; of the healthy request before it, nothing."""
    backend = ControlledBackend()
    with otlp_receiver() as (endpoint, received):
        app = controlled_app(
            backend,
            model_warmup=False,
            otel_exporter_otlp_traces_endpoint=endpoint,
            trace_sample_ratio=0.0,
            trace_slow_ms=NEVER_SLOW_MS,
        )
        with TestClient(app, raise_server_exceptions=False) as client:
            ready_client(client)
            healthy = client.post("/predict", content=cat_jpeg(), headers=JPEG)
            backend.fail_with = RuntimeError("the model broke")
            failed = client.post("/predict", content=cat_jpeg(), headers=JPEG)
            assert (healthy.status_code, failed.status_code) == (200, 500)
            app.state.telemetry.tracer_provider.force_flush()
        with received.lock:
            spans = list(received.full)
    assert not [s for s in spans if s.trace_id == _trace_of(healthy)]
    tree = [s for s in spans if s.trace_id == _trace_of(failed)]
    (server,) = [s for s in tree if s.parent_span_id == ""]
    assert server.name == "POST /predict" and server.status_code == 2  # ERROR
    ids = {s.span_id for s in tree}
    for span in tree:
        assert span is server or span.parent_span_id in ids, span.name
        assert server.start_ns <= span.start_ns <= span.end_ns <= server.end_ns, span.name
    assert {"validate_input", "preprocess_image", "model_inference"} <= {s.name for s in tree}
    assert any("exception" in s.events for s in tree)
    batches = [s for s in spans if s.name == "inference_batch" and _trace_of(failed) in s.links]
    assert len(batches) == 1 and batches[0].status_code == 2


def test_a_batch_that_starts_after_its_request_was_kept_is_exported() -> None:
    """A request times out (kept) just as its batch begins: the batch span, linked to
    the request's already finished span, is still exported."""
    sampler, exporter = _sampler()
    tracer = sampler.tracer
    server = tracer.start_span("server")
    inference = tracer.start_span("model_inference", context=trace.set_span_in_context(server))
    inference.end()
    assert sampler.decide(server, Outcome.TIMEOUT, 0.0, None) is True
    server.end()
    link = trace.Link(inference.get_span_context())
    tracer.start_span("inference_batch", context=Context(), links=[link]).end()
    assert "inference_batch" in {s.name for s in exporter.get_finished_spans()}


def test_leaving_a_record_by_an_exception_records_it_as_the_sdk_does() -> None:
    sampler, exporter = _sampler()
    server = sampler.tracer.start_span("server")
    with (
        pytest.raises(ValueError, match="bad"),
        sampler.tracer.start_span("stage", context=trace.set_span_in_context(server)),
    ):
        raise ValueError("bad")
    quiet = sampler.tracer.start_span(
        "quiet", context=trace.set_span_in_context(server), record_exception=False,
        set_status_on_exception=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="bad"), quiet:
        raise ValueError("bad")
    sampler.decide(server, Outcome.ERROR, 0.0, None)
    stage, silent = exporter.get_finished_spans()
    assert stage.status.status_code is StatusCode.ERROR
    assert [e.name for e in stage.events] == ["exception"]
    assert silent.status.status_code is StatusCode.UNSET and not silent.events


def _frozen(bucket: Any) -> list[float]:
    """Stop a token bucket's clock at 100 s; the returned list's one item moves it."""
    now = [100.0]
    bucket.clock = lambda: now[0]
    bucket.updated = now[0]
    return now


def test_refused_traces_are_kept_up_to_their_rate_and_errors_always() -> None:
    """Under overload every refusal looks alike: at most ``refused_per_second`` of their
    traces are kept (a burst of as many at once), the others are judged as healthy
    requests (kept when slow, parent-sampled or by ratio); failures and timeouts are
    always kept."""
    rule = TailSampling([], ratio=0.0, slow_seconds=1.0, refused_per_second=3.0)
    assert rule.refusals is not None
    now = _frozen(rule.refusals)
    kept = [rule.reason(Outcome.REFUSED, 0.0, False) for _ in range(5)]
    assert kept == ["refused"] * 3 + [None] * 2  # the burst, then nothing
    assert rule.reason(Outcome.REFUSED, 2.0, False) == "slow"  # still kept when slow
    assert rule.reason(Outcome.REFUSED, 0.0, True) == "parent_sampled"
    assert rule.reason(Outcome.ERROR, 0.0, False) == "error"
    assert rule.reason(Outcome.TIMEOUT, 0.0, False) == "timeout"
    now[0] += 1.0  # a second later: three more
    assert [rule.reason(Outcome.REFUSED, 0.0, False) for _ in range(4)] == [
        "refused", "refused", "refused", None,
    ]  # fmt: skip
    unlimited, _ = _sampler()  # refused_per_second 0: every refusal kept
    assert all(unlimited.reason(Outcome.REFUSED, 0.0, False) == "refused" for _ in range(50))


def test_low_confidence_traces_are_kept_up_to_their_rate() -> None:
    """In the incident the quality alerts are about, nearly every answer is unusually
    unsure: at most ``wanted_per_second`` of the requests that ask (`want_trace`) get
    their trace kept; the others are told no (so no exemplar links to a dropped trace)
    and judged as healthy requests."""
    from golden_signals.sampling import want_trace

    rule = TailSampling([], ratio=0.0, slow_seconds=1.0, wanted_per_second=2.0)
    assert rule.wanted is not None
    _frozen(rule.wanted)
    answers = []
    for _ in range(4):
        with rule.tracer.start_as_current_span("request") as root:
            answers.append(want_trace("low_confidence"))
            assert want_trace("low_confidence") is answers[-1]  # asking twice takes one
        answers.append(rule.decide(root, Outcome.OK, 0.0, None))
    assert answers == [True, True, True, True, False, False, False, False]
    assert want_trace("low_confidence") is None  # outside a recorded request
