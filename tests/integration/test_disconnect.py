"""A client that goes away: its request leaves the queue unrun and is counted as 499."""

from __future__ import annotations

import socket

import httpx2 as httpx
import pytest

from tests.helpers import ControlledBackend, controlled_app, wait_until
from tests.images import cat_jpeg
from tests.scrape import parse, value
from tests.servers import threaded_server

pytestmark = pytest.mark.integration


def _raw_predict(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    body = cat_jpeg()
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def test_disconnected_client_is_dropped_from_the_queue_and_counted() -> None:
    backend = ControlledBackend(blocked=True)
    app = controlled_app(backend, model_warmup=False, max_batch_size=1)
    with threaded_server(app) as url:
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, what="ready")
        host = app.state.host
        held = _raw_predict(url)  # runs, held in the model
        wait_until(backend.entered.is_set, what="the first request in the model")
        leaving = _raw_predict(url)  # waits in the queue ...
        wait_until(lambda: host.batcher.pending == 2, what="the second request queued")
        leaving.close()  # ... and its client goes away
        wait_until(lambda: host.batcher.pending == 1, what="the abandoned request to leave")
        backend.release.set()
        response = held.recv(65536)
        held.close()
        assert response.startswith(b"HTTP/1.1 200")
        samples = parse(httpx.get(f"{url}/metrics").text)
    assert backend.calls == 1  # the abandoned request was never computed
    assert (
        value(samples, "http_requests_total", method="POST", endpoint="/predict", status="499") == 1
    )
    assert (
        value(samples, "http_requests_total", method="POST", endpoint="/predict", status="200") == 1
    )
