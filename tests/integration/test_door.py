"""Refusals at the door against a real `serve`: which requests the HTTP protocol may
answer before the app, and what it does with the refused body it then reads.

The server keeps one refusal for the app and answers every later one at the door
(``TRACE_REFUSED_PER_SECOND`` far below one a second), so that where a request was
answered is deterministic: the app writes an access line for it, with its request id;
the door counts it in its "Requests refused before the app" line instead.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from inference_gateway.api.shedding import LOG_INTERVAL_SECONDS
from tests.gate import Gate, fill_queue
from tests.images import cat_jpeg
from tests.servers import GatewayProcess, gateway_process, read_http_response

pytestmark = pytest.mark.integration

QUEUE = 2
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(gate: Gate) -> Iterator[GatewayProcess]:
    env = {
        "GATE_DIR": str(gate.dir),
        "WORKERS": "1",
        "MAX_BATCH_SIZE": "1",
        "MAX_QUEUE_SIZE": str(QUEUE),
        "REQUEST_TIMEOUT": "60",
        "MODEL_STALL_SECONDS": "60",
        "TRACE_REFUSED_PER_SECOND": "0.0001",  # one refusal through the app, then the door
        "MAX_BODY_BYTES": str(MAX_BODY),
        "REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "LOG_LEVEL": "WARNING",
    }
    with gateway_process(env, args=("--app", "tests.gated_app:app")) as process:
        yield process


@pytest.fixture
def full(server: GatewayProcess, gate: Gate) -> Iterator[GatewayProcess]:
    """The model blocked and its queue full; released after the test."""
    with ThreadPoolExecutor(QUEUE + 1) as pool:
        held = fill_queue(gate, server.url, pool, QUEUE)
        # The one refusal the app is allowed (the server's first): spent here if not yet.
        with _connect(server) as sock:
            sock.sendall(_head("spend") + cat_jpeg())
            assert read_http_response(sock)[0] == 503
        try:
            yield server
        finally:
            gate.open()
            assert [f.result().status_code for f in held] == [200] * (QUEUE + 1)


def _connect(server: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    sock.settimeout(30)  # a connection kept open where it should close fails here
    return sock


def _head(
    request_id: str,
    *,
    length: int | None = None,
    version: str = "1.1",
    target: str = "/predict",
    extra: str = "",
) -> bytes:
    length = len(cat_jpeg()) if length is None else length
    return (
        f"POST {target} HTTP/{version}\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {length}\r\nX-Request-Id: {request_id}\r\n{extra}\r\n"
    ).encode()


def _lines(server: GatewayProcess) -> list[dict[str, object]]:
    lines = []
    for line in server.log_lines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _answered_by_app(server: GatewayProcess, request_id: str) -> bool:
    return any(line.get("request_id") == request_id for line in _lines(server))


def _wait_closed(sock: socket.socket) -> None:
    """Read ``sock`` until the server closes it: the end of the stream, or a reset (a
    server closing with bytes of ours unread resets the connection). A connection
    still open after the socket's 30 s timeout raises `TimeoutError`: the test fails."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_a_plain_refusal_is_answered_at_the_door_and_the_rest_by_the_app(
    full: GatewayProcess,
) -> None:
    """Only the plain case is the door's: HTTP/1.0, ``Connection: close``, ``Expect:
    100-continue`` and a query string (which the app validates) go to the app, which
    writes each one's access line; a plain refusal gets none of its own."""
    door_lines_before = sum(
        1 for line in _lines(full) if line.get("message") == "Requests refused before the app"
    )
    cases = {
        "plain": _head("plain"),
        "http10": _head("http10", version="1.0"),
        "close": _head("close", extra="Connection: close\r\n"),
        "query": _head("query", target="/predict?top_k=3"),
    }
    for request_id, head in cases.items():
        with _connect(full) as sock:
            sock.sendall(head + cat_jpeg())
            status, reply, _ = read_http_response(sock)
            assert status == 503, request_id
            assert f"x-request-id: {request_id}".encode() in reply.lower()
    with _connect(full) as sock:  # Expect: the app answers without reading the body
        sock.sendall(_head("expect", extra="Expect: 100-continue\r\n"))
        assert read_http_response(sock)[0] == 503
    time.sleep(LOG_INTERVAL_SECONDS + 0.5)  # the door's line is written within a second
    for request_id in ("http10", "close", "query", "expect"):
        assert _answered_by_app(full, request_id), request_id
    assert not _answered_by_app(full, "plain")
    tallies = [
        line for line in _lines(full) if line.get("message") == "Requests refused before the app"
    ]
    assert len(tallies) > door_lines_before


def test_a_repeated_request_id_is_read_as_the_app_reads_it(full: GatewayProcess) -> None:
    with _connect(full) as sock:
        sock.sendall(_head("first", extra="X-Request-Id: second\r\n") + cat_jpeg())
        status, reply, body = read_http_response(sock)
    assert status == 503
    assert b"x-request-id: first" in reply.lower()
    assert json.loads(body)["request_id"] == "first"


def test_a_refused_body_that_stops_or_trickles_or_overflows_closes_the_connection(
    full: GatewayProcess,
) -> None:
    """The refused body is read and dropped under the app's own limits: a client that
    stops sending is closed after the keep-alive timeout, one that trickles after
    ``REQUEST_BODY_TIMEOUT``, one that sends more than ``MAX_BODY_BYTES`` at once."""
    stopped, trickling, overflowing = _connect(full), _connect(full), _connect(full)
    try:
        for sock, length in ((stopped, 5000), (trickling, 5000), (overflowing, 10 * MAX_BODY)):
            sock.sendall(_head(f"body-{length}", length=length))
            assert read_http_response(sock)[0] == 503  # answered from the head alone
        stopped.sendall(b"x" * 100)  # a second read of the body, then silence
        with contextlib.suppress(OSError):  # the server may close before it all went
            overflowing.sendall(b"x" * (2 * MAX_BODY))
        _wait_closed(overflowing)
        for _ in range(BODY_TIMEOUT * 4):  # one byte every 0.5 s: never idle for long
            try:
                trickling.sendall(b"x")
            except OSError:
                break  # closed by the server
            if select.select([trickling], [], [], 0.5)[0]:
                break  # its end of the connection arrived
        _wait_closed(trickling)
        _wait_closed(stopped)
    finally:
        for sock in (stopped, trickling, overflowing):
            sock.close()


def test_a_malformed_body_after_a_refusal_at_the_door_closes_without_a_second_answer(
    full: GatewayProcess,
) -> None:
    with _connect(full) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert read_http_response(sock)[0] == 503
        sock.sendall(b"zz-not-a-chunk-size\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest == b""  # no 400 after the 503: closed
