"""A client that goes away: its request leaves the queue unrun and is counted as 499."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from inference_gateway.api.limits import BodySizeLimitMiddleware
from tests.helpers import ControlledBackend, controlled_app, json_log_capture, wait_until
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
        host = app.state.registry.resolve()
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


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """All log records as JSON lines in a buffer; defaults restored after."""
    with json_log_capture() as stream:
        yield stream


@pytest.mark.parametrize("kind", ["raw", "multipart", "v2"])
def test_a_client_leaving_mid_upload_logs_one_warning_and_frees_its_bytes(
    kind: str, json_log: io.StringIO
) -> None:
    backend = ControlledBackend()
    app = controlled_app(backend, model_warmup=False)
    body = cat_jpeg()
    ctype = "image/jpeg" if kind == "raw" else "multipart/form-data; boundary=xyz"
    path, endpoint = "/predict", "/predict"
    if kind == "v2":  # the Open Inference Protocol: was a 500 with a traceback
        ctype, path = "application/json", "/v2/models/efficientnet-lite0/infer"
        endpoint = "/v2/models/{name}/infer"
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                       "shape": [1, 3, 224, 224], "data": [0.5] * 150528}]}
                          ).encode()  # fmt: skip
    if kind == "multipart":
        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            + body
            + b"\r\n--xyz--\r\n"
        )
    with threaded_server(app) as url:
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, what="ready")
        limits = _body_limits(app)
        host, port = url.removeprefix("http://").split(":")

        def abandoned() -> float:
            return value(
                parse(httpx.get(f"{url}/metrics").text),
                "http_requests_total", method="POST", endpoint=endpoint, status="499",
            )  # fmt: skip

        for n in range(1, 6):
            sock = socket.create_connection((host, int(port)))
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body[: len(body) // 2])  # half the upload ...
            wait_until(lambda: limits.inflight_bytes > 0, what="the server to hold the upload")
            sock.close()  # ... then gone
            wait_until(lambda n=n: abandoned() == n, what=f"{n} abandoned uploads counted")
            # The abandoned upload's bytes are released.
            wait_until(lambda: limits.inflight_bytes == 0, what="the upload's bytes released")
    assert backend.calls == 0
    records = [json.loads(line) for line in json_log.getvalue().splitlines() if line]
    mine = [r for r in records if r.get("endpoint") == endpoint]
    assert len(mine) == 5  # one line per abandoned upload, no storm
    assert all(r["level"] == "WARNING" and r["status_code"] == 499 for r in mine)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]  # no traceback


def _body_limits(app: object) -> BodySizeLimitMiddleware:
    """The app's body-limit middleware instance (built when the server started)."""
    layer = app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, BodySizeLimitMiddleware):
        layer = layer.app
    return layer
