"""`instrument` on apps shaped as their authors shaped them: FastAPI's bigger-applications
layout, Starlette with a Mount and a WebSocket route, a plain ASGI callable, streaming,
background tasks, a ``root_path``; one call, idempotent, one registry per app."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import shop
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import FileResponse
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from conftest import exemplars, lines, samples, value
from golden_signals import TailSamplingOptions, instrument
from golden_signals.instrument import Instrumentation
from golden_signals.tracing import trace_id_of

OPENMETRICS = {"accept": "application/openmetrics-text; version=1.0.0"}
EVERY_TRACE = TailSamplingOptions(ratio=1.0)


def scrape(client: TestClient) -> str:
    response = client.get("/metrics", headers=OPENMETRICS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    return response.text


def instrumented(app: Any, log_stream: io.StringIO, **options: Any) -> Instrumentation:
    options.setdefault("tail_sampling", EVERY_TRACE)
    options.setdefault("trace_response_header", True)  # the trace ids read from answers
    return instrument(app, log_stream=log_stream, include_registry=None, **options)


def test_bigger_applications_routes_are_their_templates_with_every_prefix(
    log_stream: io.StringIO,
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app)
    assert client.get("/v1/items/42").status_code == 200
    assert client.get("/v1/items/43").status_code == 200
    assert client.get("/v1/items/missing").status_code == 404
    assert client.get("/v1/items/1", headers={"x-token": "wrong"}).status_code == 400
    assert client.post("/admin/reset").status_code == 200
    assert client.get("/v1/items/42/nothing-here").status_code == 404
    assert client.get("/wp-login.php").status_code == 404
    assert client.delete("/admin/reset").status_code == 405
    found = samples(scrape(client))
    total = "http_requests_total"
    assert value(found, total, method="GET", endpoint="/v1/items/{item_id}", status="200") == 2
    assert value(found, total, method="GET", endpoint="/v1/items/{item_id}", status="404") == 1
    assert value(found, total, method="GET", endpoint="/v1/items/{item_id}", status="400") == 1
    assert value(found, total, method="POST", endpoint="/admin/reset", status="200") == 1
    assert value(found, total, method="DELETE", endpoint="/admin/reset", status="405") == 1
    # Paths that match no route share one series: scanners add none.
    assert value(found, total, method="GET", endpoint="unmatched", status="404") == 2
    endpoints = {dict(labels).get("endpoint") for name, labels in found if name == total}
    assert endpoints == {"/v1/items/{item_id}", "/admin/reset", "unmatched"}


def test_a_mount_and_a_websocket_route_keep_their_prefix_and_template(
    log_stream: io.StringIO,
) -> None:
    async def user(request: Request) -> Response:
        return PlainTextResponse(request.path_params["uid"])

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello " + websocket.path_params["room"])
        await websocket.close()

    async def refused(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    accounts = Starlette(routes=[Route("/users/{uid}", user)])
    app = Starlette(
        routes=[
            Mount("/accounts", app=accounts),
            WebSocketRoute("/ws/{room}", chat),
            WebSocketRoute("/closed", refused),
        ]
    )
    instrumented(app, log_stream)
    client = TestClient(app)
    assert client.get("/accounts/users/7").text == "7"
    with client.websocket_connect("/ws/lobby") as websocket:
        assert websocket.receive_text() == "hello lobby"
    with pytest.raises(Exception), client.websocket_connect("/closed"):  # noqa: B017, PT011
        pass
    found = samples(scrape(client))
    total = "http_requests_total"
    assert value(found, total, method="GET", endpoint="/accounts/users/{uid}", status="200") == 1
    assert value(found, total, method="WEBSOCKET", endpoint="/ws/{room}", status="101") == 1
    assert value(found, total, method="WEBSOCKET", endpoint="/closed", status="403") == 1
    # A session's length is the client's: no latency observed for it.
    assert not any(
        name.startswith("http_request_duration") and ("method", "WEBSOCKET") in labels
        for name, labels in found
    )


def test_under_a_root_path_the_template_leaves_the_proxys_prefix_out(
    log_stream: io.StringIO,
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app, root_path="/shop")
    assert client.get("/shop/v1/items/5").status_code == 200
    found = samples(client.get("/shop/metrics", headers=OPENMETRICS).text)
    assert (
        value(
            found, "http_requests_total", method="GET", endpoint="/v1/items/{item_id}", status="200"
        )
        == 1
    )


def test_a_streamed_answer_has_its_first_byte_apart_from_its_last(log_stream: io.StringIO) -> None:
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app)
    assert client.get("/reports/stream").text == "first\nsecond\n"
    found = samples(scrape(client))
    labels = {"method": "GET", "endpoint": "/reports/stream"}
    total = value(found, "http_request_duration_seconds_sum", **labels)
    first = value(found, "http_response_first_byte_seconds_sum", **labels)
    assert value(found, "http_response_first_byte_seconds_count", **labels) == 1
    # The stream waits STREAM_GAP_SECONDS between its chunks, after the status line.
    assert total >= shop.STREAM_GAP_SECONDS
    assert total - first >= shop.STREAM_GAP_SECONDS


@pytest.mark.parametrize("header", [False, True])
def test_a_stream_that_fails_or_runs_slow_after_its_status_line_keeps_its_trace(
    log_stream: io.StringIO,
    spans: InMemorySpanExporter,
    span_processor: SimpleSpanProcessor,
    header: bool,
) -> None:
    """Tail sampling keeps every failed and every slow request's trace: a stream is
    ruled on when it ends, not on its status line (a 200 sent at once), so one that
    breaks, or runs longer than ``slow_seconds``, keeps its trace and its exemplar,
    and a fast healthy one is dropped (ratio 0). With the answer's ``traceparent`` the
    flag sent with the status line is the ruling then: not kept, later kept."""
    app = shop.create_app()

    @app.get("/reports/broken")
    async def broken() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            raise RuntimeError("the report broke mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")

    options = TailSamplingOptions(ratio=0.0, slow_seconds=shop.STREAM_GAP_SECONDS / 2)
    instrumented(
        app, log_stream, tail_sampling=options, trace_response_header=header,
        span_processors=[span_processor],
    )  # fmt: skip
    client = TestClient(app, raise_server_exceptions=False)
    answers = {path: client.get(path) for path in ("/reports/broken", "/reports/stream")}
    kept = {span.name: span for span in spans.get_finished_spans()}
    assert set(kept) == {"GET /reports/broken", "GET /reports/stream"}
    assert kept["GET /reports/broken"].attributes["http.response.status_code"] == 500
    completed = {
        line["endpoint"]: line
        for line in lines(log_stream)
        if line["message"] == "Request completed"
    }
    assert completed["/reports/broken"]["trace_sampled"] is True
    assert completed["/reports/stream"]["trace_sampled"] is True
    assert client.get("/v1/items/1").status_code == 200
    assert [span.name for span in spans.get_finished_spans()] == list(kept)  # fast: dropped
    trace_ids = {format(span.context.trace_id, "032x") for span in kept.values()}
    found = exemplars(scrape(client), "http_request_duration_seconds_bucket")
    assert {e["trace_id"] for e in found} == trace_ids
    for answer in answers.values():
        assert ("traceparent" in answer.headers) is header
        if header:  # said as the status line went: not kept then
            assert answer.headers["traceparent"].endswith("-00")


def test_a_background_task_is_not_in_its_requests_latency(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "BACKGROUND_SECONDS", 0.5)
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app)  # returns once the app is done, background task included
    assert client.post("/orders").json() == {"order": "accepted"}
    assert any(line["message"] == "follow-up done" for line in lines(log_stream))
    found = samples(scrape(client))
    labels = {"method": "POST", "endpoint": "/orders"}
    assert value(found, "http_request_duration_seconds_count", **labels) == 1
    # The follow-up slept 0.5 s after the answer's last byte: none of it is latency.
    assert value(found, "http_request_duration_seconds_sum", **labels) < 0.5


def test_a_file_the_server_sends_itself_ends_the_answer_before_its_background_task(
    log_stream: io.StringIO, tmp_path: Path
) -> None:
    """Under a server that sends files itself (ASGI's ``http.response.pathsend``, which
    Starlette's ``FileResponse`` then uses), that message is the answer's end: a
    background task that fails after it leaves the 200 sent, counts its exception and
    is not in the request's latency."""
    report = tmp_path / "report.txt"
    report.write_text("quarterly\n")
    app = FastAPI()

    async def fail_later() -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("the follow-up failed")

    @app.get("/report")
    async def get_report(tasks: BackgroundTasks) -> FileResponse:
        tasks.add_task(fail_later)
        return FileResponse(report)

    instrumented(app, log_stream)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/report",
        "raw_path": b"/report", "query_string": b"", "root_path": "", "headers": [],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80), "state": {},
        "extensions": {"http.response.pathsend": {}},
    }  # fmt: skip
    with contextlib.suppress(RuntimeError):  # the follow-up's failure reaches the server
        asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert sent[0]["status"] == 200
    (line,) = [line for line in lines(log_stream) if line["message"] == "Request completed"]
    assert (line["status_code"], line["error_type"]) == (200, "RuntimeError")
    assert line["duration_ms"] < 300  # the follow-up's sleep came after the answer
    found = samples(scrape(TestClient(app)))
    labels = {"method": "GET", "endpoint": "/report"}
    assert value(found, "http_requests_total", status="200", **labels) == 1
    assert value(found, "http_requests_total", status="500", **labels) == 0


def test_a_clients_own_methods_add_no_series_and_no_span_names(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    """A method outside the standard ones (a scanner's own text, which h11 servers pass
    on) is ``_OTHER`` in every metric and ``HTTP`` in the span's name, with the text in
    ``http.request.method_original`` and on the access line: scanners add no series."""
    app = shop.create_app()
    instrumented(app, log_stream, span_processors=[span_processor])
    client = TestClient(app)
    for number in range(40):
        client.request(f"SCAN{number}", f"/wp-login{number}.php")
    assert client.request("PROPFIND", "/v1/items/1").status_code == 405
    assert client.get("/v1/items/1").status_code == 200
    found = samples(scrape(client))
    methods = {dict(labels)["method"] for name, labels in found if name.startswith("http_")}
    assert methods == {"_OTHER", "GET"}
    assert (
        value(found, "http_requests_total", method="_OTHER", endpoint="unmatched", status="404")
        == 40
    )
    assert (
        value(
            found,
            "http_requests_total",
            method="_OTHER",
            endpoint="/v1/items/{item_id}",
            status="405",
        )
        == 1
    )
    (span,) = [
        s
        for s in spans.get_finished_spans()
        if s.attributes.get("http.request.method_original") == "PROPFIND"
    ]
    assert span.name == "HTTP /v1/items/{item_id}"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert {s.name for s in spans.get_finished_spans()} == {
        "HTTP",
        "HTTP /v1/items/{item_id}",
        "GET /v1/items/{item_id}",
    }
    methods_logged = {
        line["method"] for line in lines(log_stream) if line["message"] == "Request completed"
    }
    assert {"SCAN0", "SCAN39", "PROPFIND", "GET"} <= methods_logged


def test_the_span_only_middleware_names_a_clients_own_method_http_too(
    spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    """`instrument_fastapi` (spans alone) bounds span names as `instrument` does."""
    from opentelemetry.sdk.trace import TracerProvider

    from golden_signals.tracing import instrument_fastapi

    provider = TracerProvider()
    provider.add_span_processor(span_processor)
    app = shop.create_app()
    instrument_fastapi(app, provider.get_tracer("shop"))
    client = TestClient(app)
    client.request("SCAN0", "/wp-login.php")
    client.request("PROPFIND", "/v1/items/1")
    assert sorted(span.name for span in spans.get_finished_spans()) == [
        "HTTP", "HTTP /v1/items/{item_id}",
    ]  # fmt: skip


def test_one_call_is_idempotent_and_outermost_whatever_the_apps_order(
    log_stream: io.StringIO,
) -> None:
    app = shop.create_app()

    class Teapot(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Response:
            if request.url.path == "/teapot":
                return PlainTextResponse("short and stout", status_code=418)
            response: Response = await call_next(request)
            return response

    first = instrumented(app, log_stream)
    app.add_middleware(Teapot)  # after instrument: the instrumentation still sees its answer
    assert instrument(app) is first
    started: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield

    app.router.lifespan_context = lifespan  # the app's own lifespan, set last

    with TestClient(app) as client:
        assert started == [True]
        assert client.get("/teapot").status_code == 418
        assert client.get("/v1/items/1").status_code == 200
        found = samples(scrape(client))
    assert (
        value(found, "http_requests_total", method="GET", endpoint="unmatched", status="418") == 1
    )
    # Counted once, not once per call of instrument.
    assert (
        value(
            found, "http_requests_total", method="GET", endpoint="/v1/items/{item_id}", status="200"
        )
        == 1
    )


def test_two_apps_in_one_process_each_count_their_own(log_stream: io.StringIO) -> None:
    """Each app its own registry, and its own ``service_name`` on its access lines
    (failures' lines, written the general way, included), whichever was instrumented
    last."""
    one, two = shop.create_app(), shop.create_app()
    instrumented(one, log_stream, service_name="orders")
    instrumented(two, log_stream, service_name="billing")  # no "Duplicated timeseries"
    first = TestClient(one, raise_server_exceptions=False)
    second = TestClient(two, raise_server_exceptions=False)
    first.get("/v1/items/1")
    first.get("/v1/items/2")
    second.get("/v1/items/3")
    name, labels = (
        "http_requests_total",
        {"method": "GET", "endpoint": "/v1/items/{item_id}", "status": "200"},
    )
    assert value(samples(scrape(first)), name, **labels) == 2
    assert value(samples(scrape(second)), name, **labels) == 1
    first.get("/boom", headers={"x-request-id": "orders-boom"})
    second.get("/boom", headers={"x-request-id": "billing-boom"})
    named = {
        (line["request_id"] if "boom" in line["request_id"] else line["endpoint"], line["logger"])
        for line in lines(log_stream)
        if line["message"] == "Request completed" and line["endpoint"] != "/metrics"
    }
    assert named == {
        ("/v1/items/{item_id}", "orders"), ("/v1/items/{item_id}", "billing"),
        ("orders-boom", "orders"), ("billing-boom", "billing"),
    }  # fmt: skip


def test_a_plain_asgi_app_is_served_through_what_instrument_returns(
    log_stream: io.StringIO,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    served = instrumented(app, log_stream).app
    assert instrument(served) is instrument(app)
    client = TestClient(served)
    response = client.get("/anything")
    assert response.text == "plain"
    assert response.headers["x-request-id"]
    found = samples(scrape(client))
    assert (
        value(found, "http_requests_total", method="GET", endpoint="unmatched", status="200") == 1
    )


def test_servers_take_an_instrumented_plain_app_for_an_asgi_3_one(log_stream: io.StringIO) -> None:
    """uvicorn tells an ASGI 3 app from an ASGI 2 one by its coroutine function: what
    `instrument` returns for a plain app must pass, though the layer inside it returns
    its coroutines rather than being one."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(instrumented(app, log_stream).app, lifespan="off", log_config=None)
    config.load()
    assert config.interface == "asgi3"


def test_an_unhandled_exception_is_a_500_with_its_request_id_logged_once(
    log_stream: io.StringIO,
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/boom", headers={"x-request-id": "req-boom-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-boom-1"
    assert response.json() == {"detail": "Internal Server Error", "request_id": "req-boom-1"}
    (line,) = [line for line in lines(log_stream) if line.get("request_id") == "req-boom-1"]
    assert line["level"] == "ERROR"
    assert line["status_code"] == 500
    assert line["endpoint"] == "/boom"
    assert line["error_type"] == "RuntimeError"
    assert line["exception"][0]["exc_value"] == "the shop's bug"
    assert "locals" not in line["exception"][0]["frames"][-1]
    found = samples(scrape(client))
    assert (
        value(
            found, "http_request_exceptions_total", endpoint="/boom", exception_type="RuntimeError"
        )
        == 1
    )


def test_log_lines_carry_trace_span_and_request_ids_and_never_a_secret(
    log_stream: io.StringIO,
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app)
    secret = "Bearer s3cr3t-v4lue"
    response = client.get(
        "/v1/items/9",
        headers={"authorization": secret, "cookie": "session=abc123", "x-request-id": "req-9"},
    )
    logging.getLogger("shop").info(
        "a line outside any request",
        extra={"api_key": "k-123", "headers": {"Authorization": secret}},
    )
    records = lines(log_stream)
    text = log_stream.getvalue()
    assert "s3cr3t" not in text and "abc123" not in text and "k-123" not in text
    own = next(line for line in records if line["message"] == "reading item 9")
    access = next(line for line in records if line["message"] == "Request completed")
    trace_id = response.headers["traceparent"].split("-")[1]
    for line in (own, access):
        assert line["request_id"] == "req-9"
        assert line["trace_id"] == trace_id
        assert len(line["span_id"]) == 16
    assert own["logger"] == "shop"
    assert access["endpoint"] == "/v1/items/{item_id}" and access["duration_ms"] > 0
    outside = next(line for line in records if line["message"] == "a line outside any request")
    assert outside["api_key"] == "[redacted]"
    assert outside["headers"] == {"Authorization": "[redacted]"}


def test_a_server_span_per_request_named_for_its_route_continuing_the_callers_trace(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream, span_processors=[span_processor])
    client = TestClient(app)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = client.get("/v1/items/3", headers={"traceparent": caller})
    client.get("/health")
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /v1/items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None and span.attributes["http.route"] == "/v1/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert response.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_the_exclusion_list_reaches_every_signal(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    app = shop.create_app()
    instrumented(
        app,
        log_stream,
        span_processors=[span_processor],
        exclude=("/health", "/metrics", "/admin/reset"),
    )
    client = TestClient(app)
    assert client.get("/health").status_code == 200
    assert client.post("/admin/reset").status_code == 200
    found = samples(scrape(client))
    assert not [labels for name, labels in found if name == "http_requests_total"]
    assert spans.get_finished_spans() == ()
    assert not [line for line in lines(log_stream) if line["message"] == "Request completed"]


def test_exemplars_name_the_kept_traces_only(log_stream: io.StringIO) -> None:
    app = shop.create_app()
    instrumented(app, log_stream, tail_sampling=TailSamplingOptions(ratio=0.0))
    client = TestClient(app, raise_server_exceptions=False)
    healthy = client.get("/v1/items/1")  # dropped by the ratio 0
    failed = client.get("/boom")  # kept: a 5xx
    kept = failed.headers["traceparent"].split("-")[1]
    assert healthy.headers["traceparent"].endswith("-00") and failed.headers[
        "traceparent"
    ].endswith("-01")
    found = exemplars(scrape(client), "http_request_duration_seconds_bucket")
    assert {e["trace_id"] for e in found} == {kept}


def test_the_apps_own_prometheus_client_metrics_are_served_beside(log_stream: io.StringIO) -> None:
    from prometheus_client import CollectorRegistry, Counter

    own = CollectorRegistry()
    orders = Counter("shop_orders_total", "Orders taken.", registry=own)
    orders.inc(3)
    app = FastAPI()
    instrument(app, log_stream=log_stream, include_registry=own)
    found = samples(scrape(TestClient(app)))
    assert value(found, "shop_orders_total") == 3


def test_with_the_sdk_disabled_there_are_metrics_and_logs_and_no_traces(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = shop.create_app()
    instrumentation = instrumented(app, log_stream)
    assert instrumentation.tracer_provider is None
    client = TestClient(app)
    response = client.get("/v1/items/1")
    assert "traceparent" not in response.headers
    assert "trace_id" not in next(
        line for line in lines(log_stream) if line["message"] == "Request completed"
    )
    assert (
        value(
            samples(scrape(client)),
            "http_requests_total",
            method="GET",
            endpoint="/v1/items/{item_id}",
            status="200",
        )
        == 1
    )


def test_the_otel_variables_keep_their_meaning(
    log_stream: io.StringIO,
    spans: InMemorySpanExporter,
    span_processor: SimpleSpanProcessor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # head sampling, not tail
    app = shop.create_app()
    instrumentation = instrumented(app, log_stream, span_processors=[span_processor])
    assert instrumentation.tail is None
    assert instrumentation.tracer_provider is not None
    assert instrumentation.tracer_provider.resource.attributes["service.name"] == "checkout"
    client = TestClient(app)
    response = client.get("/v1/items/1")
    flags = int(response.headers["traceparent"].rsplit("-", 1)[1], 16)
    assert flags & 0x01 == 0  # not sampled; the ids flow all the same
    assert spans.get_finished_spans() == ()
    # An exemplar never names a trace the head sampler dropped.
    assert exemplars(scrape(client), "http_request_duration_seconds_bucket") == []
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    other = shop.create_app()
    instrumented(other, log_stream, span_processors=[span_processor])
    client = TestClient(other)
    client.get("/v1/items/2")
    (span,) = spans.get_finished_spans()
    assert span.resource.attributes["service.name"] == "checkout"
    (exemplar,) = exemplars(scrape(client), "http_request_duration_seconds_bucket")
    assert exemplar["trace_id"] == format(span.context.trace_id, "032x")


def test_a_mount_with_a_parameter_names_its_template_not_each_value(
    log_stream: io.StringIO,
) -> None:
    async def orders(request: Request) -> Response:
        return PlainTextResponse(request.path_params["tenant"])

    tenants = Starlette(routes=[Route("/orders", orders)])
    app = Starlette(
        routes=[Mount("/t/{tenant}", app=Starlette(routes=[Mount("/v1", app=tenants)]))]
    )
    instrumented(app, log_stream)
    client = TestClient(app)
    for tenant in ("acme", "globex", "initech"):
        assert client.get(f"/t/{tenant}/v1/orders").text == tenant
    found = samples(scrape(client))
    endpoints = {
        dict(labels)["endpoint"] for name, labels in found if name == "http_requests_total"
    }
    assert endpoints == {"/t/{tenant}/v1/orders"}


def test_the_exclusion_list_holds_under_a_root_path(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream, span_processors=[span_processor])
    client = TestClient(app, root_path="/shop")
    assert client.get("/shop/health").status_code == 200
    found = samples(client.get("/shop/metrics", headers=OPENMETRICS).text)
    assert not [labels for name, labels in found if name == "http_requests_total"]
    assert spans.get_finished_spans() == ()


def test_a_background_tasks_failure_leaves_the_answer_sent(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_follow_up() -> None:
        raise RuntimeError("the follow-up failed")

    monkeypatch.setattr(shop, "_slow_follow_up", failing_follow_up)
    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/orders").status_code == 200
    found = samples(scrape(client))
    assert value(found, "http_requests_total", method="POST", endpoint="/orders", status="200") == 1
    assert value(found, "http_requests_total", method="POST", endpoint="/orders", status="500") == 0
    assert (
        value(
            found,
            "http_request_exceptions_total",
            endpoint="/orders",
            exception_type="RuntimeError",
        )
        == 1
    )


def test_a_websocket_refused_with_an_answer_counts_that_answers_status(
    log_stream: io.StringIO,
) -> None:
    from starlette.testclient import WebSocketDenialResponse

    async def private(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("who are you", status_code=401))

    app = Starlette(routes=[WebSocketRoute("/private", private)])
    instrumented(app, log_stream)
    client = TestClient(app)
    with pytest.raises(WebSocketDenialResponse), client.websocket_connect("/private"):
        pass
    found = samples(scrape(client))
    assert (
        value(found, "http_requests_total", method="WEBSOCKET", endpoint="/private", status="401")
        == 1
    )


def test_an_app_started_twice_still_traces_and_counts(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    app = shop.create_app()
    instrumented(app, log_stream, span_processors=[span_processor])
    for item in ("1", "2"):
        with TestClient(app) as client:  # start-up and shutdown each time
            assert client.get(f"/v1/items/{item}").status_code == 200
    assert len(spans.get_finished_spans()) == 2
    found = samples(scrape(TestClient(app)))
    assert (
        value(
            found, "http_requests_total", method="GET", endpoint="/v1/items/{item_id}", status="200"
        )
        == 2
    )


def test_secret_names_in_any_spelling_are_redacted(log_stream: io.StringIO) -> None:
    instrumented(FastAPI(), log_stream)
    logging.getLogger("shop").warning(
        "config", extra={"accessToken": "t-1", "clientSecret": "c-2", "X-Api-Key": "k-3",
                         "nested": {"a": {"b": {"c": {"d": {"e": {"password": "p-4"}}}}}},
                         "headers": [(b"authorization", [b"Bearer v-5"])], "api_key_id": "ops"},
    )  # fmt: skip
    names = (
        "secret_key", "SECRET_KEY", "secretKey", "aws_secret_access_key", "private_key",
        "cookies", "session_id", "credentials", "password_hash", "passwords", "api_keys",
        "x_auth", "db_password", "passphrase", "auth_header", "authHeader", "auth_key",
        "access_tokens", "refresh_tokens", "secretkey", "SECRETKEY", "private_key_pem",
        "privateKeyPem", "oauth_tokens", "jwt", "bearer", "pwd", "encryption_key",
    )  # fmt: skip
    logging.getLogger("shop").warning(
        "more", extra={**{name: f"s-{name}" for name in names}, "max_tokens": 128,
                       "prompt_tokens": 64, "auth_method": "oidc", "private_key_id": "k1",
                       "request": {"cookies": {"session": "s-jar"}}},
    )  # fmt: skip
    text = log_stream.getvalue()
    for secret in ("t-1", "c-2", "k-3", "p-4", "v-5", "s-jar", *(f"s-{name}" for name in names)):
        assert secret not in text
    assert '"api_key_id":"ops"' in text  # a key's id is no secret
    assert '"max_tokens":128' in text and '"prompt_tokens":64' in text  # nor a count
    assert '"auth_method":"oidc"' in text and '"private_key_id":"k1"' in text


def test_the_apps_own_families_on_the_same_engine_are_served_with_exemplars(
    log_stream: io.StringIO,
) -> None:
    """An app's own per-request metrics in the registry `instrument` made: no
    prometheus_client write on the path, in the same exposition, with the exemplar of the
    request's kept trace (every trace is kept here)."""
    app = FastAPI()
    signals = instrumented(app, log_stream)
    orders = signals.registry.counter("orders_total", "Orders placed.", ("kind",))
    orders.touch(("book",))  # there at 0 from the start: rate() sees its first order
    basket = signals.registry.histogram("basket_items", "Items per order.", (), (1, 5, 10))

    @app.post("/orders")
    def order() -> dict[str, str]:
        orders.inc(("pen",))
        basket.observe((), 3, trace_id_of(trace.get_current_span()))
        return {"ok": "yes"}

    client = TestClient(app)
    answered = client.post("/orders")
    exposition = scrape(client)
    found = samples(exposition)
    assert value(found, "orders_total", kind="book") == 0
    assert value(found, "orders_total", kind="pen") == 1
    assert value(found, "basket_items_bucket", le="5.0") == 1
    trace_id = answered.headers["traceparent"].split("-")[1]
    assert exemplars(exposition, "basket_items_bucket") == [{"trace_id": trace_id}]


def test_a_request_keeps_its_id_on_every_line_when_the_app_clears_structlogs_context(
    log_stream: io.StringIO,
) -> None:
    """An app's own middleware that starts each request with structlog's
    ``clear_contextvars`` (as structlog's documentation shows) and binds its own fields:
    the request's id stays on the app's lines and the access line, beside those fields."""
    import structlog

    def clearing(app: Any) -> Any:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(tenant="acme")
            await app(scope, receive, send)

        return middleware

    async def hello(request: Request) -> Response:
        structlog.get_logger("shop").info("hello")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(clearing)
    instrumented(app, log_stream)
    response = TestClient(app).get("/hello", headers={"x-request-id": "req-kept"})
    assert response.headers["x-request-id"] == "req-kept"
    own, access = (line for line in lines(log_stream) if line.get("tenant") == "acme")
    assert own["message"] == "hello" and access["message"] == "Request completed"
    assert own["request_id"] == access["request_id"] == "req-kept"
    assert own["method"] == access["method"] == "GET"


class _Shutdown(BaseException):
    """What no ``except Exception`` takes (as ``KeyboardInterrupt``)."""


def test_a_base_exception_from_the_app_fails_its_span_and_still_leaves_its_line(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    async def halt(request: Request) -> Response:
        raise _Shutdown("stop now")

    app = Starlette(routes=[Route("/halt", halt)])
    instrumented(app, log_stream, span_processors=[span_processor])
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/halt", "raw_path": b"/halt", "root_path": "",
        "query_string": b"", "headers": [(b"x-request-id", b"req-halt")],
        "client": ("127.0.0.1", 40000), "server": ("test", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def serve() -> None:  # the ASGI call itself: a test client would cancel it
        await app(scope, receive, send)

    with pytest.raises(_Shutdown):
        asyncio.run(serve())
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /halt"
    assert not span.status.is_ok and span.status.description is not None
    assert "_Shutdown: stop now" in span.status.description
    assert [event.name for event in span.events] == ["exception"]
    (line,) = [line for line in lines(log_stream) if line.get("request_id") == "req-halt"]
    assert line["message"] == "Request completed" and line["endpoint"] == "/halt"
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context restored


def test_an_untraced_path_is_counted_and_logged_without_a_span(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    async def quiet(request: Request) -> Response:
        return PlainTextResponse("shh")

    app = Starlette(routes=[Route("/quiet", quiet)])
    instrumented(app, log_stream, span_processors=[span_processor], untraced=["/quiet"])
    client = TestClient(app)
    response = client.get("/quiet", headers={"x-request-id": "req-quiet"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-quiet"
    assert "traceparent" not in response.headers  # no span of its own, none around it
    assert spans.get_finished_spans() == ()
    (line,) = [line for line in lines(log_stream) if line.get("request_id") == "req-quiet"]
    assert line["endpoint"] == "/quiet" and line["status_code"] == 200
    assert "trace_id" not in line and "trace_sampled" not in line
    found = samples(scrape(client))
    assert value(found, "http_requests_total", method="GET", endpoint="/quiet", status="200") == 1


def test_hooks_replaced_after_the_middleware_was_built_are_the_ones_called(
    log_stream: io.StringIO,
) -> None:
    from golden_signals.middleware import Hooks, ObservabilityMiddleware, RequestRecord

    app = shop.create_app()
    instrumented(app, log_stream)
    client = TestClient(app)
    assert client.get("/v1/items/1").status_code == 200  # the stack built
    middleware = app.middleware_stack.inner
    assert isinstance(middleware, ObservabilityMiddleware)
    seen: list[RequestRecord] = []

    class Counting(Hooks):
        def finished(self, record: RequestRecord) -> None:
            seen.append(record)

    middleware.hooks = Counting()
    client.get("/v1/items/2")
    assert [record.endpoint for record in seen] == ["/v1/items/{item_id}"]
    plain = Hooks()
    plain.access_line = lambda record, logger: seen.append(record)  # type: ignore[method-assign]
    middleware.hooks = plain
    client.get("/v1/items/3")
    assert len(seen) == 2
    written = [line for line in lines(log_stream) if line["message"] == "Request completed"]
    assert len(written) == 2  # the third request's line was the replaced hook's


def test_answers_carry_no_traceparent_unless_asked_and_an_apps_own_is_left(
    log_stream: io.StringIO,
) -> None:
    """By default, as with OpenTelemetry's response propagator unset, an answer carries
    the request id but no ``traceparent`` of ours, and an app's own passes untouched;
    the request's trace is still made and its ids are on the access line."""

    async def plain(request: Request) -> Response:
        return PlainTextResponse("plain")

    async def own(request: Request) -> Response:
        headers = {"traceparent": "00-" + "1" * 32 + "-", "X-Request-ID": "app-made"}
        return PlainTextResponse("mine", headers=headers)

    app = Starlette(routes=[Route("/plain", plain), Route("/own", own)])
    instrumented(app, log_stream, trace_response_header=False)
    client = TestClient(app)
    answer = client.get("/plain", headers={"x-request-id": "req-plain"})
    assert answer.headers["x-request-id"] == "req-plain"
    assert "traceparent" not in answer.headers
    own_answer = client.get("/own", headers={"x-request-id": "req-own"})
    assert own_answer.headers.get_list("traceparent") == ["00-" + "1" * 32 + "-"]
    assert own_answer.headers.get_list("x-request-id") == ["req-own"]  # ours, still
    (line,) = [line for line in lines(log_stream) if line.get("request_id") == "req-plain"]
    assert len(line["trace_id"]) == 32 and line["trace_flags"] in ("00", "01")


def test_the_apps_own_request_id_and_traceparent_headers_are_replaced_by_ours(
    log_stream: io.StringIO, spans: InMemorySpanExporter, span_processor: SimpleSpanProcessor
) -> None:
    """An app that sets ``X-Request-ID`` and ``traceparent`` itself (in any case): the
    answer carries one of each, the request's, continuing the caller's trace with its
    ``tracestate``."""

    async def own(request: Request) -> Response:
        return PlainTextResponse(
            "mine", headers={"X-Request-ID": "app-made", "TraceParent": "00-" + "1" * 32 + "-"}
        )

    app = Starlette(routes=[Route("/own", own)])
    instrumented(app, log_stream, span_processors=[span_processor])
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = TestClient(app).get(
        "/own",
        headers={"x-request-id": "req-own", "traceparent": caller, "tracestate": "vendor=1"},
    )
    assert response.headers.get_list("x-request-id") == ["req-own"]
    (traceparent,) = response.headers.get_list("traceparent")
    assert traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    (span,) = spans.get_finished_spans()
    assert span.context.trace_state.get("vendor") == "1"
