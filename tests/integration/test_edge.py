"""The edge, below the router: what a real ``inference-gateway serve`` does with bytes
that never become a request for the app.

Raw sockets send what no HTTP client library would: a 1 MiB header, hundreds of
headers, smuggling shapes, a TLS handshake on the plain port, headers too slow, a body
too large. Each is answered with problem+json where an answer can still be sent,
counted in ``http_protocol_errors_total{reason}``, logged once (with the peer and the
reason; rate-limited), and the server stays ready. A flood of endless headers leaves
the worker's memory flat.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from tests.images import cat_jpeg
from tests.scrape import parse, value
from tests.servers import GatewayProcess, gateway_process, read_http_response, wait_until

pytestmark = pytest.mark.integration
PROBLEM = "urn:inference-gateway:problem:"
GET = b"GET /health HTTP/1.1\r\nHost: gateway\r\n"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    env = {"WORKERS": "1", "REQUEST_HEADER_TIMEOUT": "1", "MAX_BODY_BYTES": "1048576"}
    with gateway_process(env) as process:
        yield process


def _port(gateway: GatewayProcess) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").split(":")
    return host, int(port)


def _exchange(gateway: GatewayProcess, data: bytes) -> tuple[int | None, bytes, bytes]:
    """Send ``data`` on a new connection; the answer (None: closed without one)."""
    with socket.create_connection(_port(gateway), timeout=30) as sock:
        with contextlib.suppress(OSError):  # it may close before reading everything
            sock.sendall(data)
        try:
            return read_http_response(sock)
        except (ConnectionError, OSError):
            return None, b"", b""


def _errors(gateway: GatewayProcess, reason: str) -> float:
    return value(
        parse(httpx.get(f"{gateway.url}/metrics").text), "http_protocol_errors_total", reason=reason
    )


def _lines(gateway: GatewayProcess, reason: str) -> list[dict[str, Any]]:
    return [
        record
        for record in (json.loads(line) for line in gateway.log_lines() if line.startswith("{"))
        if record.get("message") == "Request refused below the router"
        and record.get("reason") == reason
    ]


#: name -> (bytes sent, reason, status answered or None, problem slug)
CASES: dict[str, tuple[bytes, str, int | None, str | None]] = {
    "a 1 MiB header": (GET + b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n", "header_too_large", 431, "header-too-large"),
    "200 headers": (GET + b"".join(b"X-H%d: v\r\n" % n for n in range(200)) + b"\r\n", "too_many_headers", 431, "header-too-large"),
    "Content-Length with Transfer-Encoding": (
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "malformed", 400, "malformed-request",
    ),
    "two Content-Lengths": (
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        "malformed", 400, "malformed-request",
    ),
    "a negative Content-Length": (
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: -1\r\n\r\n", "malformed", 400, "malformed-request",
    ),
    "a TLS handshake on the plain port": (
        bytes.fromhex("16030100a5010000a10303") + b"\x00" * 160, "tls_handshake", 400, "malformed-request",
    ),
    "a body over MAX_BODY_BYTES": (
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Type: image/jpeg\r\nContent-Length: 104857600\r\n\r\n",
        "body_too_large", 413, "payload-too-large",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_below_the_router_is_answered_counted_and_logged(
    gateway: GatewayProcess, case: str
) -> None:
    data, reason, status, slug = CASES[case]
    before = _errors(gateway, reason)
    answered, head, body = _exchange(gateway, data)
    assert answered == status, (head, body)
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == PROBLEM + slug
    wait_until(lambda: _errors(gateway, reason) == before + 1, what=f"{reason} counted")
    if reason.startswith("body_"):  # inside a route: its access line tells it
        wait_until(
            lambda: any(
                json.loads(line).get("status_code") == status
                for line in gateway.log_lines()
                if line.startswith("{")
            ),
            what="the access line",
        )
    else:
        wait_until(lambda: bool(_lines(gateway, reason)), what=f"{reason} logged")
        line = _lines(gateway, reason)[-1]
        assert line["client"].startswith("127.0.0.1:") and line["level"] == "WARNING"
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_a_bad_chunk_size_is_counted_though_no_answer_can_be_sent(gateway: GatewayProcess) -> None:
    """The app has begun the request when its body turns out malformed: the connection
    is closed, and the event still counted."""
    before = _errors(gateway, "malformed")
    _exchange(
        gateway,
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    wait_until(lambda: _errors(gateway, "malformed") == before + 1, what="counted")
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_headers_too_slow_are_a_counted_408(gateway: GatewayProcess) -> None:
    before = _errors(gateway, "header_timeout")
    with socket.create_connection(_port(gateway), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: ")  # and nothing more
        status, _, body = read_http_response(sock)
    assert status == 408 and json.loads(body)["type"] == PROBLEM + "request-timeout"
    wait_until(lambda: _errors(gateway, "header_timeout") == before + 1, what="counted")


def test_a_flood_of_bad_requests_is_counted_whole_and_logged_sparingly(
    gateway: GatewayProcess,
) -> None:
    before_count = _errors(gateway, "malformed")
    before_lines = len(_lines(gateway, "malformed"))
    for _ in range(30):
        _exchange(gateway, b"NOT HTTP AT ALL\r\n\r\n")
    wait_until(lambda: _errors(gateway, "malformed") == before_count + 30, what="all counted")
    logged = len(_lines(gateway, "malformed")) - before_lines
    assert 1 <= logged < 30  # one line a second, not one per request
    # The next line, a second or more later, says how many were left out: go on sending
    # until one more is logged (the window is the server's clock, not the test's).
    logged_lines = len(_lines(gateway, "malformed"))

    def one_more_is_logged() -> bool:
        _exchange(gateway, b"NOT HTTP AT ALL\r\n\r\n")
        return len(_lines(gateway, "malformed")) > logged_lines

    wait_until(one_more_is_logged, what="a later bad request to be logged")
    assert "not_logged_since_last" in _lines(gateway, "malformed")[logged_lines]


def test_endless_headers_on_many_connections_leave_memory_flat(gateway: GatewayProcess) -> None:
    """32 connections each stream a header without end, 1 MiB each: every one is cut off
    at MAX_HEADER_BYTES (64 KiB) with a 431; the worker's resident memory after is
    within 16 MiB of before (it grew by over 150 MB before the limit existed)."""
    resident_before = gateway.rss_bytes()
    before = _errors(gateway, "header_too_large")
    statuses: list[int | None] = []
    lock = threading.Lock()

    def flood() -> None:
        with socket.create_connection(_port(gateway), timeout=30) as sock:
            answer: int | None = None
            try:
                sock.sendall(GET + b"X-Endless: ")
                for _ in range(64):
                    sock.sendall(b"a" * 16384)
            except OSError:
                pass  # cut off: what was answered?
            try:
                answer = read_http_response(sock)[0]
            except (ConnectionError, OSError):
                answer = None
            with lock:
                statuses.append(answer)

    threads = [threading.Thread(target=flood) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    wait_until(lambda: _errors(gateway, "header_too_large") == before + 32, what="all 32 cut off")
    assert statuses.count(431) + statuses.count(None) == 32 and statuses.count(431) >= 1
    assert gateway.rss_bytes() - resident_before < 16 * 1024 * 1024
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_a_body_left_unread_does_not_count_as_the_next_request_s_headers(
    gateway: GatewayProcess,
) -> None:
    """A request answered before its 512 KiB body was read (no route takes it), then a
    second request on the same connection: the body's bytes are not headers."""
    body = b"x" * (512 * 1024)
    with socket.create_connection(_port(gateway), timeout=30) as sock:
        sock.sendall(
            b"POST /nowhere HTTP/1.1\r\nHost: g\r\nContent-Type: image/jpeg\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert read_http_response(sock)[0] == 404
        sock.sendall(GET + b"\r\n")
        assert read_http_response(sock)[0] == 200


def test_thousands_of_idle_connections_meet_max_connections() -> None:
    """2,000 idle connections fill a worker's MAX_CONNECTIONS; the next one is answered
    503 too-many-connections with Retry-After and closed, it is counted, the gauge
    shows the 2,000, and once some close a new client is served again."""
    limit = 2000
    env = {"WORKERS": "1", "MAX_CONNECTIONS": str(limit), "REQUEST_HEADER_TIMEOUT": "120"}
    with gateway_process(env) as gateway:
        held: list[socket.socket] = []
        try:
            # The readiness probes' own connections are closed: count what is open now.
            def open_now() -> float:
                return value(
                    parse(httpx.get(f"{gateway.url}/metrics").text), "http_connections_open"
                )

            base = int(open_now()) - 1  # less the scrape's own connection
            for _ in range(limit - base):
                held.append(socket.create_connection(_port(gateway), timeout=30))
            # Full: the next connection (this one) is refused. No scrape until there is room.
            answered, head, body = _exchange(gateway, GET + b"\r\n")
            assert answered == 503, (head, body)
            assert b"retry-after: 1" in head.lower()
            assert json.loads(body)["type"] == PROBLEM + "too-many-connections"
            for sock in held[:10]:
                sock.close()
            wait_until(lambda: _errors(gateway, "connection_limit") >= 1, what="counted")
            wait_until(
                lambda: httpx.get(f"{gateway.url}/ready").status_code == 200,
                what="a new client served again",
            )
            assert open_now() >= limit - 10
        finally:
            for sock in held:
                sock.close()


def test_a_compressed_upload_is_a_logged_and_counted_415(gateway: GatewayProcess) -> None:
    photo = gzip.compress(cat_jpeg())
    answered, _, body = _exchange(
        gateway,
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Type: image/jpeg\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(photo) + photo,
    )
    assert answered == 415
    problem = json.loads(body)
    assert problem["type"] == PROBLEM + "unsupported-media-type"
    assert "compressed uploads" in problem["detail"]
    wait_until(
        lambda: any(
            record.get("request_id") == problem["request_id"] and record.get("status_code") == 415
            for record in (json.loads(x) for x in gateway.log_lines() if x.startswith("{"))
        ),
        what="its access line",
    )
    samples = parse(httpx.get(f"{gateway.url}/metrics").text)
    assert (
        value(samples, "http_requests_total", method="POST", endpoint="/predict", status="415") >= 1
    )
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_websocket_upgrade_requests_do_not_use_up_the_connections() -> None:
    """Upgrade requests (no WebSocket routes here) are ordinary requests: answered, and
    their connections stop counting once closed, however many come."""
    with gateway_process({"WORKERS": "1", "MAX_CONNECTIONS": "3"}) as gateway:
        upgrade = (
            b"GET /ws HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        for _ in range(6):
            answered, _, _ = _exchange(gateway, upgrade)
            assert answered == 404
        wait_until(
            lambda: httpx.get(f"{gateway.url}/ready").status_code == 200,
            what="a plain request still served",
        )


def test_trailers_of_a_chunked_body_are_not_counted_as_headers(gateway: GatewayProcess) -> None:
    trailers = b"".join(b"X-T%d: v\r\n" % n for n in range(150))
    answered, _, body = _exchange(
        gateway,
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + trailers + b"\r\n",
    )
    assert answered == 400, body  # the body is not an image: an answer, not a cut-off
    assert json.loads(body)["type"] == PROBLEM + "invalid-image"
