"""The observability middleware and the server span around a request that never gets
its answer because it is cancelled: a client that went away is a 499 everywhere."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from inference_gateway.app import create_app
from tests.helpers import (
    ControlledBackend,
    controlled_loader,
    json_log_capture,
    make_settings,
    ready_client,
    wait_until,
)
from tests.scrape import parse, value


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"gateway")], "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip


def test_a_request_cancelled_before_its_answer_is_a_499_in_metrics_logs_and_span() -> None:
    """A server cancels the request's task when its client goes away (or at a forced
    stop): no answer was sent, nothing failed on the server's side. The access line,
    ``http_requests_total``, the span and so the SLO rules (which leave 499 out) must
    agree on 499, not count a 500."""
    exporter = InMemorySpanExporter()
    app = create_app(
        make_settings(),
        model_loader=controlled_loader(ControlledBackend()),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    entered = threading.Event()

    @app.get("/hang")
    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()  # an answer that never comes

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError(f"nothing is sent: {message}")

        await app(_scope("/hang"), receive, send)

    with json_log_capture() as logs, TestClient(app) as client:
        ready_client(client)
        task = client.portal.start_task_soon(call)  # type: ignore[union-attr]
        wait_until(entered.is_set, what="the request to reach its route")
        task.cancel()
        wait_until(lambda: '"/hang"' in logs.getvalue(), what="the access line")
        samples = parse(client.get("/metrics").text)
    assert value(samples, "http_requests_total", method="GET", endpoint="/hang", status="499") == 1
    assert value(samples, "http_requests_total", method="GET", endpoint="/hang", status="500") == 0
    (line,) = [json.loads(x) for x in logs.getvalue().splitlines() if '"/hang"' in x]
    assert (line["level"], line["status_code"]) == ("WARNING", 499)
    assert line["error_type"] == "ClientClosedRequestException"
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET /hang"]
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 499
    assert span.status.status_code is not StatusCode.ERROR
