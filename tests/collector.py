"""A local OTLP/HTTP receiver for tests: decodes protobuf span exports, or hangs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span with its place in the tree, times, status, events and links."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    start_ns: int
    end_ns: int
    status_code: int  # OTLP: 0 unset, 1 ok, 2 error
    events: tuple[str, ...]
    links: tuple[str, ...]  # the linked spans' trace ids


@dataclass
class Received:
    """Spans the receiver decoded, flattened to (name, trace id hex, attributes), and
    the same spans in full (`ReceivedSpan`)."""

    spans: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    full: list[ReceivedSpan] = field(default_factory=list)
    resources: list[dict[str, object]] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(any_value, kind) if kind else None


def _full(span: Any) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=span.status.code,
        events=tuple(event.name for event in span.events),
        links=tuple(link.trace_id.hex() for link in span.links),
    )


@contextmanager
def otlp_receiver(*, hang: threading.Event | None = None) -> Iterator[tuple[str, Received]]:
    """Serve ``POST /v1/traces`` on loopback; with ``hang`` set, never answer until it is."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            with received.lock:
                received.connections += 1
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if hang is not None:
                hang.wait(timeout=60)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with received.lock:
                for resource_spans in request.resource_spans:
                    received.resources.append(
                        {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    )
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            attributes = {a.key: _value(a.value) for a in span.attributes}
                            received.spans.append((span.name, span.trace_id.hex(), attributes))
                            received.full.append(_full(span))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        if hang is not None:
            hang.set()
        server.shutdown()
        server.server_close()
