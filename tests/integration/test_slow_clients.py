"""Slow clients (slowloris): headers and bodies that trickle in are cut off.

A real uvicorn with the gateway's HTTP protocol, on loopback. The deadlines are short
here (0.5 s for headers, 1 s for a body); a client that trickles a byte at a time would
otherwise hold its connection for as long as it liked. Each test bounds its own wait
(the socket timeout) so a regression fails instead of hanging.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import ControlledBackend, controlled_app
from tests.images import cat_jpeg
from tests.scrape import parse, value
from tests.servers import read_http_response, threaded_server

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0
#: How long a test keeps trickling before it declares the server never cut it off.
GIVE_UP_AFTER = 30.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = controlled_app(ControlledBackend(), request_body_timeout=BODY_TIMEOUT)
    with threaded_server(app, header_timeout=HEADER_TIMEOUT) as base:
        yield base


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(GIVE_UP_AFTER)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _trickle(sock: socket.socket, data: bytes, interval: float = 0.05) -> bool:
    """Send ``data`` a byte at a time; False when the server closed the connection first."""
    give_up = time.monotonic() + GIVE_UP_AFTER
    for byte in data:
        if time.monotonic() > give_up:
            return True
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(interval)
    return True


def _status_and_body(response: bytes) -> tuple[int, dict[str, object], str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head.decode("latin-1").lower()


def test_a_connection_that_sends_nothing_is_closed_with_408(url: str) -> None:
    with _connect(url) as sock:
        response = _read_until_closed(sock)
    status, body, head = _status_and_body(response)
    assert status == 408
    assert body["type"] == "urn:inference-gateway:problem:request-timeout"
    assert "connection: close" in head


def test_headers_trickled_a_byte_at_a_time_are_cut_off(url: str) -> None:
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        + b"X-Padding: " + b"a" * 2000 + b"\r\n\r\n"
    )  # fmt: skip
    with _connect(url) as sock:
        finished = _trickle(sock, request)
        response = _read_until_closed(sock)
    assert not finished, "the server let a slowloris send all its headers"
    assert response.startswith(b"HTTP/1.1 408 ")


def test_a_body_trickled_a_byte_at_a_time_gets_408_and_is_counted(url: str) -> None:
    body = cat_jpeg()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = value(
        parse(httpx.get(f"{url}/metrics").text),
        "http_requests_total", method="POST", endpoint="/predict", status="408",
    )  # fmt: skip
    with _connect(url) as sock:
        sock.sendall(head)
        finished = _trickle(sock, body)
        response = _read_until_closed(sock)
    assert not finished, "the server let a slow body run past its deadline"
    status, problem, headers = _status_and_body(response)
    assert status == 408
    assert problem["type"] == "urn:inference-gateway:problem:request-timeout"
    assert "connection: close" in headers
    after = value(
        parse(httpx.get(f"{url}/metrics").text),
        "http_requests_total", method="POST", endpoint="/predict", status="408",
    )  # fmt: skip
    assert after == before + 1


def test_a_second_request_on_a_kept_alive_connection_has_its_own_deadline(url: str) -> None:
    with _connect(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        finished = _trickle(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"b" * 500)
        response = _read_until_closed(sock)
    assert not finished
    assert response.startswith(b"HTTP/1.1 408 ")


def test_prompt_clients_idling_on_a_kept_alive_connection_are_unaffected(url: str) -> None:
    body = cat_jpeg()
    request = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with _connect(url) as sock:  # one connection for every request
        for n in range(3):
            if n:
                # Idle past the header deadline: time between requests is keep-alive's
                # business, and the next request's deadline starts at its first byte.
                time.sleep(HEADER_TIMEOUT * 1.5)
            sock.sendall(request)
            status, _, _ = read_http_response(sock)
            assert status == 200


# --- Pipelining: a request read behind one still being answered ---------------------------


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """Each response in ``data`` (Content-Length bodies): its status and body."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        answers.append((int(head.split(b" ", 2)[1]), rest[:length]))
        data = rest[length:]
    return answers


def _request(body: bytes) -> bytes:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


#: A second request pipelined behind the first, its head cut in two.
SECOND_HEAD = b"GET /health HTTP/1.1\r\nHost: gateway\r\n"
SECOND_REST = b"X-Request-ID: pipelined-2\r\n\r\n"


@pytest.fixture(scope="module")
def held() -> Iterator[tuple[str, ControlledBackend]]:
    """A server whose model the test holds, with the short header deadline."""
    backend = ControlledBackend(blocked=True)
    app = controlled_app(backend, model_warmup=False, request_timeout=60)
    with threaded_server(app, header_timeout=HEADER_TIMEOUT) as base:
        yield base, backend


def _deadline_passed(url: str) -> None:
    """Return once the server's header deadline has passed at least once since the call:
    a connection that sends nothing is answered 408 then (an event of the server's own
    clock, not a guess at how long to sleep)."""
    with _connect(url) as idle:
        status, _, _ = _status_and_body(_read_until_closed(idle))
        assert status == 408


def _large_png() -> bytes:
    """A photo-sized upload of about 1 MiB (noise does not compress): more than uvicorn
    buffers before it pauses reading."""
    pixels = np.random.default_rng(7).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("first", ["slow prediction", "large upload"])
@pytest.mark.parametrize(
    "finished", [True, False], ids=["head finished later", "head never finished"]
)
def test_a_pipelined_request_waits_for_the_answer_before_it(
    held: tuple[str, ControlledBackend], first: bytes, finished: bool
) -> None:
    """A request pipelined behind one the model is still answering is not read until
    that answer is sent, so its header deadline starts then: the first request is
    answered in full, never cut off by the second's deadline, and the second is then
    answered (its head completed) or refused 408 after the deadline (never completed)."""
    url, backend = held
    backend.release.clear()
    backend.entered.clear()
    body = cat_jpeg() if first == "slow prediction" else _large_png()
    with _connect(url) as sock:
        sock.sendall(_request(body) + SECOND_HEAD)
        assert backend.entered.wait(GIVE_UP_AFTER)  # the first request is in the model
        _deadline_passed(url)  # longer than the second request's deadline, in flight
        backend.release.set()
        if finished:
            first_answer = read_http_response(sock)
            sock.sendall(SECOND_REST)
            second = read_http_response(sock)
            assert (first_answer[0], second[0]) == (200, 200)
            return
        answers = _responses(_read_until_closed(sock))
    assert [status for status, _ in answers] == [200, 408], answers
    assert json.loads(answers[1][1])["type"].endswith(":request-timeout")


def test_a_malformed_body_of_the_request_answered_closes_at_once(url: str) -> None:
    """A bad chunk in the body of the request being answered is that request's error:
    the connection closes, and no second answer follows the first (a refusal deferred
    as if it were a later request's was written after the route's answer)."""
    with _connect(url) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ZZZ\r\nnot a chunk\r\n"
        )
        answers = _responses(_read_until_closed(sock))
    assert len(answers) <= 1, answers
