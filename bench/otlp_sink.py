"""A stand-in trace collector for benchmarks: accepts OTLP/HTTP exports, counts spans.

    python -m bench.otlp_sink PORT

A gateway measured with tracing on exports every span here, as it would to a
collector in production: the spans are built, batched, encoded as protobuf and posted,
so "full observability" in the tables includes the export, not only span creation.
``GET /stats`` answers how many exports and spans arrived. The sink runs in its own
process so its CPU can be told apart from the server's (a real collector runs
elsewhere; on this 2-core machine it competes with the server, and the tables say
how much it used).
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_counts = {"exports": 0, "spans": 0}
_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector would

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with _lock:
            _counts["exports"] += 1
            _counts["spans"] += spans
        self._answer(_EMPTY_RESPONSE, "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/stats":  # never mistaken for a server's readiness probe
            self._answer(b"", "text/plain", status=404)
            return
        with _lock:
            payload = json.dumps(_counts).encode()
        self._answer(payload, "application/json")

    def _answer(self, payload: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
