"""Traces: the spec's span tree, W3C context, OTLP export, and a collector that fails."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, StatusCode
from pydantic import ValidationError

from golden_signals.tracing import (
    TracedOperation,
    add_span_event,
    create_span,
    get_current_span_id,
    get_current_trace_id,
    get_tracer,
    set_span_attribute,
    set_span_error,
    setup_tracing,
)
from inference_gateway.app import create_app
from inference_gateway.inference.preprocess import decode
from tests.collector import otlp_receiver
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    controlled_loader,
    held_prediction,
    make_settings,
    ready_client,
    wait_until,
)
from tests.images import cat_jpeg, encode, gradient
from tests.scrape import parse, total, value
from tests.servers import free_port

JPEG = {"content-type": "image/jpeg"}
STAGES = ["validate_input", "preprocess_image", "model_inference", "format_response"]


def _traced_app(
    backend: ControlledBackend | None, **settings: object
) -> tuple[TestClient, InMemorySpanExporter]:
    """An app whose spans go to memory: over ``backend``, or the real model if None."""
    exporter = InMemorySpanExporter()
    app = create_app(
        make_settings(**settings),
        model_loader=controlled_loader(backend) if backend is not None else None,
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    return TestClient(app, raise_server_exceptions=False), exporter


def _request_spans(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id
    ]


def _decoding_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of the thread each image is decoded on."""
    threads: list[str] = []

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return decode(*args)

    monkeypatch.setattr("inference_gateway.inference.preprocess.decode", spy)
    return threads


@pytest.mark.parametrize("workers", [2, 1], ids=["decode-on-loop", "decode-pool"])
def test_predict_produces_the_spec_trace_shape_with_attributes(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two cores: one of two workers decodes on its event loop; a single worker in a pool.
    monkeypatch.setattr("inference_gateway.config.usable_cores", lambda: 2)
    threads = _decoding_threads(monkeypatch)
    client, exporter = _traced_app(None, workers=workers)  # the real model
    with client:
        ready_client(client)
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
    assert response.status_code == 200
    assert [name.startswith("preprocess") for name in threads] == [workers == 1]
    body = response.json()
    trace_id = body["trace_id"]
    spans = {s.name: s for s in _request_spans(exporter, trace_id)}
    server = spans["POST /predict"]
    assert server.parent is None or not server.parent.is_remote
    for stage in STAGES:
        assert spans[stage].parent is not None
        assert spans[stage].parent.span_id == server.context.span_id, stage
    ordered = sorted((spans[s] for s in STAGES), key=lambda s: s.start_time or 0)
    assert [s.name for s in ordered] == STAGES
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/predict"
    assert server.attributes["http.response.status_code"] == 200
    pre = spans["preprocess_image"].attributes
    assert (pre["image.width"], pre["image.height"], pre["image.format"]) == (451, 300, "jpeg")
    assert pre["image.bytes"] == len(cat_jpeg())
    inference = spans["model_inference"].attributes
    assert inference["model.name"] == "efficientnet-lite0"
    assert inference["model.version"] == "1"
    assert inference["batch.size"] == 1
    # The span records the answer the client got.
    top = body["predictions"][0]
    assert inference["prediction.class"] == top["label"]
    assert inference["prediction.confidence"] == top["confidence"]
    assert response.headers["traceparent"].split("-")[1] == trace_id
    inner = [spans["queue_wait"], spans["forward_pass"]]
    for span in inner:
        assert span.parent.span_id == spans["model_inference"].context.span_id
    assert spans["queue_wait"].end_time <= spans["forward_pass"].start_time
    assert spans["forward_pass"].end_time <= spans["model_inference"].end_time


def test_a_worker_decoding_on_its_loop_sends_large_images_to_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Over INLINE_OTHER_PIXELS: decoding it on the loop would stall every connection.
    monkeypatch.setattr("inference_gateway.config.usable_cores", lambda: 2)
    threads = _decoding_threads(monkeypatch)
    client, exporter = _traced_app(ControlledBackend(), workers=2)
    large_png = encode(gradient(1200, 1000), "PNG")
    with client:
        ready_client(client)
        small = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        large = client.post("/predict", content=large_png, headers={"content-type": "image/png"})
    assert (small.status_code, large.status_code) == (200, 200)
    assert [name.startswith("preprocess") for name in threads] == [False, True]
    spans = {s.name: s for s in _request_spans(exporter, large.json()["trace_id"])}
    assert spans["preprocess_image"].attributes["image.width"] == 1200


def test_incoming_traceparent_is_continued_and_malformed_one_ignored() -> None:
    client, exporter = _traced_app(ControlledBackend())
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with client:
        ready_client(client)
        joined = client.post(
            "/predict", content=cat_jpeg(),
            headers={**JPEG, "traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"},
        )  # fmt: skip
        assert joined.json()["trace_id"] == parent_trace
        server = next(
            s for s in _request_spans(exporter, parent_trace) if s.name == "POST /predict"
        )
        assert server.parent is not None and server.parent.span_id == 0x00F067AA0BA902B7
        for bad in (
            "garbage",
            "00-zz-11-01",
            "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
            "x" * 5000,
        ):
            response = client.post(
                "/predict", content=cat_jpeg(), headers={**JPEG, "traceparent": bad}
            )
            assert response.status_code == 200
            assert re.fullmatch(r"[0-9a-f]{32}", response.json()["trace_id"])
            assert response.json()["trace_id"] != "0" * 32


def test_failures_are_recorded_on_the_span_with_status_error() -> None:
    backend = ControlledBackend()
    client, exporter = _traced_app(backend)
    with client:
        ready_client(client)
        backend.fail_with = RuntimeError("kaboom")
        failed = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        bad_image = client.post("/predict", content=b"not an image", headers=JPEG)
    assert failed.status_code == 500
    failed_trace = failed.headers["traceparent"].split("-")[1]
    spans = {s.name: s for s in _request_spans(exporter, failed_trace)}
    inference = spans["model_inference"]
    assert inference.status.status_code is StatusCode.ERROR
    failure = next(e for e in inference.events if e.name == "exception")
    assert "RuntimeError: kaboom" in failure.attributes["exception.stacktrace"]  # the cause
    assert spans["POST /predict"].status.status_code is StatusCode.ERROR
    bad_trace = bad_image.headers["traceparent"].split("-")[1]
    pre = {s.name: s for s in _request_spans(exporter, bad_trace)}["preprocess_image"]
    assert pre.status.status_code is StatusCode.ERROR
    # A client error is expected: its type and message, without a costly stack trace.
    assert pre.events[0].attributes["exception.type"].endswith("InvalidImageException")
    assert pre.events[0].attributes["exception.message"]
    assert "exception.stacktrace" not in pre.events[0].attributes


def test_a_batch_span_is_a_root_linked_to_its_requests_and_records_failures() -> None:
    backend = ControlledBackend(blocked=True)
    client, exporter = _traced_app(backend, model_warmup=False, max_batch_size=4)
    with client:
        ready_client(client)
        # One request in the model, two queued behind it: they become one batch of two.
        with held_prediction(client, backend, count=3) as statuses:
            backend.fail_with = RuntimeError("kaboom")
    assert statuses == [500, 500, 500]
    spans = exporter.get_finished_spans()
    batches = [s for s in spans if s.name == "inference_batch"]
    # The lone first request's batch; the pair's; each of the pair retried alone.
    assert sorted(s.attributes["batch.size"] for s in batches) == [1, 1, 1, 2]
    pair = next(s for s in batches if s.attributes["batch.size"] == 2)
    assert pair.parent is None  # no single request owns a batch
    inference = {s.context.span_id: s for s in spans if s.name == "model_inference"}
    linked = [inference[link.context.span_id] for link in pair.links]
    assert len(linked) == 2 and len({s.context.trace_id for s in linked}) == 2
    assert all(s.context.trace_id != pair.context.trace_id for s in linked)
    for batch in batches:
        assert batch.status.status_code is StatusCode.ERROR, batch.attributes
        failure = next(e for e in batch.events if e.name == "exception")
        assert "kaboom" in failure.attributes["exception.message"]


def test_probes_and_scrapes_are_not_traced() -> None:
    client, exporter = _traced_app(ControlledBackend())
    with client:
        ready_client(client)
        client.get("/health")
        client.get("/metrics")
    assert not [s for s in exporter.get_finished_spans() if s.name.startswith("GET")]


def test_tracing_off_means_no_provider_and_no_trace_ids() -> None:
    app = controlled_app(ControlledBackend(), enable_tracing=False)  # fmt: skip
    assert app.state.telemetry.tracer_provider is None
    assert isinstance(app.state.telemetry.tracer, NoOpTracer)
    with TestClient(app) as client:
        ready_client(client)
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
    assert response.json()["trace_id"] is None
    assert "traceparent" not in response.headers


def test_otel_sdk_disabled_is_honoured() -> None:
    app = controlled_app(ControlledBackend(), otel_sdk_disabled=True)
    assert app.state.telemetry.tracer_provider is None


def test_resource_names_the_service_and_honours_otel_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, _ = setup_tracing(service_name="gw", service_version="9.9", environment="staging")
    attributes = provider.resource.attributes
    assert (attributes["service.name"], attributes["service.version"]) == ("gw", "9.9")
    assert attributes["deployment.environment"] == "staging"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert (
        setup_tracing(service_name="gw", service_version="1", environment="x")[
            0
        ].resource.attributes["service.name"]
        == "from-env"
    )


def test_sampler_comes_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    client, exporter = _traced_app(ControlledBackend())
    with client:
        ready_client(client)
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    flags = int(response.headers["traceparent"].rsplit("-", 1)[1], 16)
    assert flags & 0x01 == 0  # not sampled, yet the ids still correlate logs and metrics


def test_a_sampler_named_in_the_env_file_is_the_sdks_too(tmp_path: Path) -> None:
    """``OTEL_TRACES_SAMPLER`` and its ratio in the ``.env`` file (which the SDK never
    reads) switch tail sampling off and give the SDK that head sampler: nothing is
    exported at a ratio of 0, where the SDK's own default would have exported all."""
    env_file = tmp_path / ".env"
    env_file.write_text("OTEL_TRACES_SAMPLER=TraceIdRatio\nOTEL_TRACES_SAMPLER_ARG=0\n")
    client, exporter = _traced_app(ControlledBackend(), _env_file=env_file)
    with client:
        ready_client(client)
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
    assert response.status_code == 200
    assert client.app.state.telemetry.tail is None  # type: ignore[attr-defined]
    assert exporter.get_finished_spans() == ()
    assert response.headers["traceparent"].endswith("-00")
    env_file.write_text("OTEL_TRACES_SAMPLER=sometimes\n")
    with pytest.raises(ValidationError, match="unknown sampler 'sometimes'"):
        make_settings(_env_file=env_file)


def test_spans_are_exported_over_real_otlp_http() -> None:
    with otlp_receiver() as (endpoint, received):
        app = controlled_app(
            ControlledBackend(), otel_exporter_otlp_traces_endpoint=endpoint, app_name="otlp-test"
        )
        with TestClient(app) as client:
            ready_client(client)
            trace_id = client.post("/predict", content=cat_jpeg(), headers=JPEG).json()["trace_id"]
            app.state.telemetry.tracer_provider.force_flush()
            samples = parse(client.get("/metrics").text)
            # Every span the collector accepted is counted, none dropped.
            with received.lock:
                accepted = len(received.spans)
            assert value(samples, "tracing_spans_exported_total") == accepted > 0
            assert total(samples, "tracing_spans_dropped_total") == 0
        # Shutdown flushed the batch processor: the spans are already there.
        names = {name for name, tid, _ in received.spans if tid == trace_id}
        assert names >= {"POST /predict", *STAGES}
        assert received.resources[0]["service.name"] == "otlp-test"
        inference = next(
            a for n, t, a in received.spans if n == "model_inference" and t == trace_id
        )
        assert inference["model.name"] == "efficientnet-lite0"


@pytest.mark.parametrize("collector", ["closed-port", "never-answers"])
def test_a_dead_or_hanging_collector_never_hurts_requests(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the exporter gives up quickly
    # A small span queue exported often: the test overflows it with 20 predictions.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    hang = threading.Event()
    if collector == "closed-port":
        context = None
        endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"
    else:
        context = otlp_receiver(hang=hang)
        endpoint, received = context.__enter__()
    try:
        settings = make_settings(
            otel_exporter_otlp_traces_endpoint=endpoint, trace_flush_timeout_seconds=0.5
        )
        backend = ControlledBackend()
        app = create_app(settings, model_loader=controlled_loader(backend), configure_logging=False)
        with TestClient(app) as client:
            ready_client(client)
            first = client.post("/predict", content=cat_jpeg(), headers=JPEG)
            assert first.status_code == 200
            if context is not None:
                # Force an export now (on a thread: it will sit in the collector, unanswered).
                provider = app.state.telemetry.tracer_provider
                threading.Thread(target=provider.force_flush, daemon=True).start()
                wait_until(lambda: received.connections >= 1, what="the exporter to connect")
            for _ in range(20):
                response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
                assert response.status_code == 200
                assert re.fullmatch(r"[0-9a-f]{32}", response.json()["trace_id"])
            # Spans that could not be queued or delivered are counted, not kept.
            expected = "queue_full" if collector == "never-answers" else "export_failed"
            wait_until(
                lambda: value(
                    parse(client.get("/metrics").text), "tracing_spans_dropped_total",
                    reason=expected,
                ) > 0,
                what=f"dropped spans counted as {expected}",
            )  # fmt: skip
            # Exact accounting holds while the telemetry pipeline fails.
            samples = parse(client.get("/metrics").text)
            assert (
                value(
                    samples, "http_requests_total", method="POST", endpoint="/predict", status="200"
                )
                == 21
            )
        # Leaving the block ran the shutdown: it returned although the export never did.
    finally:
        if context is not None:
            context.__exit__(None, None, None)
        # Let the abandoned exporter finish now the collector is gone, inside this test.
        for thread in threading.enumerate():
            if thread.name == "span-shutdown":
                thread.join(timeout=15)


def test_span_helpers_work_on_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider, _ = setup_tracing(
        service_name="t",
        service_version="1",
        environment="test",
        processors=(SimpleSpanProcessor(exporter),),
    )
    tracer = get_tracer(provider)
    assert get_current_trace_id() is None and get_current_span_id() is None
    with create_span(tracer, "outer", {"a": 1}) as outer:
        add_span_event("milestone", {"step": 2})
        set_span_attribute("b", "x")
        assert get_current_span_id() == format(outer.get_span_context().span_id, "016x")
        with (
            pytest.raises(ValueError, match="bad"),
            TracedOperation("inner", {"c": True}, tracer=tracer),
        ):
            raise ValueError("bad")
        set_span_error(KeyError("k"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["outer"].attributes == {"a": 1, "b": "x"}
    assert spans["outer"].events[0].name == "milestone"
    assert spans["outer"].status.status_code is StatusCode.ERROR
    assert spans["inner"].status.status_code is StatusCode.ERROR
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert isinstance(get_tracer(None), NoOpTracer)
