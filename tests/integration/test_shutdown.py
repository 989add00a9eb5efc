"""Graceful shutdown of a real server under real load, with the real model.

SIGTERM arrives while clients keep predicting: ``/ready`` must answer 503 at once while
predictions are served normally through ``SHUTDOWN_DELAY_SECONDS``; then the listener
closes and every request the server has received gets its normal answer, spans reach
the collector, and the process exits 0 within its grace period. Nothing is answered
503: the grace period never runs out here. The server's counters are read back from
its multiprocess metric files after it exits, so the accounting check covers the
requests of its very last moments.

A few requests send their headers with ``Expect: 100-continue`` and hold their body
back across the signal and the listener's closing: received, still uploading.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
import tritonclient.grpc as triton
from PIL import Image

from inference_gateway.observability.metrics import multiprocess_registry
from tests.collector import otlp_receiver
from tests.helpers import wait_until
from tests.images import CAT_CLASSES, CAT_PNG, cat_jpeg
from tests.oip import grpc_images, refusal
from tests.scrape import parse, value
from tests.servers import (
    GatewayProcess,
    free_port,
    gateway_process,
    has_accepted,
    read_http_response,
)

pytestmark = pytest.mark.integration

#: Longer than the test ever needs to look at the draining server: the test ends the
#: delay itself with a second SIGTERM (which skips what is left of it).
SHUTDOWN_DELAY = 120.0
GRACE = 20.0
#: Room on top of the grace period (and the span flush) for a loaded machine: a server
#: that keeps its promise is gone long before; one that hangs never is.
EXIT_SLACK = 30.0
CLIENTS = 6
#: Requests held admitted, body unsent, across the signal.
ADMITTED = 4
DRAINING = "urn:inference-gateway:problem:draining"
#: The upload burst: clients, each with its request received and its body half sent
#: when the signal comes.
BURST = 64


@dataclass
class Outcome:
    status: int | None  # None: the connection was refused or closed (listener gone)
    problem_type: str | None = None
    trace_id: str | None = None


def _server_counts(directory: Path) -> Counter[str]:
    """The /predict answers the server's workers counted, by status, read from what they
    published to ``directory`` (as the parent's METRICS_PORT reads them)."""
    registry = multiprocess_registry(str(directory))
    counts: Counter[str] = Counter()
    for family in registry.collect():
        for sample in family.samples:
            if (
                sample.name == "http_requests_total"
                and sample.labels.get("endpoint") == "/predict"
                and sample.value
            ):
                counts[sample.labels["status"]] += int(sample.value)
    return counts


def _records(gateway: GatewayProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in gateway.log_lines() if line.startswith("{")]


def _pids_that_logged(gateway: GatewayProcess, message: str) -> set[int]:
    return {int(str(r["pid"])) for r in _records(gateway) if r.get("message") == message}


def _active_requests(gateway: GatewayProcess) -> float:
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return value(parse(metrics), "active_requests")


def _admitted_upload(url: str, body: bytes) -> socket.socket:
    """A prediction the server has admitted and is reading the body of (not sent yet)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        (
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    status, head, _ = read_http_response(sock)
    assert status == 100, head  # past the gate that refuses new work while draining
    return sock


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_serves_through_the_delay_answers_everything_received_and_exits_0(
    tmp_path: Path, workers: int
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    image = cat_jpeg()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        "/predict", content=image, headers={"content-type": "image/jpeg"}
                    )
                except httpx.TransportError:
                    with lock:
                        outcomes.append(Outcome(None))
                    return
                body = response.json()
                outcome = Outcome(response.status_code, body.get("type"), body.get("trace_id"))
                with lock:
                    outcomes.append(outcome)

    with otlp_receiver() as (collector_url, received):
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "SHUTDOWN_DELAY_SECONDS": str(SHUTDOWN_DELAY),
            "GRACEFUL_SHUTDOWN_SECONDS": str(GRACE),
            "WORKERS": str(workers),
        }
        with gateway_process(env) as gateway:
            wait_until(
                lambda: len(_pids_that_logged(gateway, "Model ready")) == workers,
                timeout=120,
                what="every worker to load the model",
            )
            worker_pids = _pids_that_logged(gateway, "Model ready")
            threads = [threading.Thread(target=client, args=(gateway.url,)) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(outcomes) >= 40, timeout=120, what="load to build up")
            admitted = [_admitted_upload(gateway.url, image) for _ in range(ADMITTED)]

            gateway.process.send_signal(signal.SIGTERM)
            # Every worker stops being ready (with several, once uvicorn's parent has
            # relayed the signal) and goes on serving predictions.
            wait_until(
                lambda: (
                    worker_pids <= _pids_that_logged(gateway, "Shutdown signal received; draining")
                ),
                what="every worker to learn of the stop",
            )
            ready = httpx.get(f"{gateway.url}/ready", timeout=10)
            during_delay = httpx.post(
                f"{gateway.url}/predict",
                content=image,
                headers={"content-type": "image/jpeg"},
                timeout=10,
            )
            served_before = len(outcomes)
            wait_until(
                lambda: len(outcomes) >= served_before + 20, what="the load to go on being served"
            )

            # A second SIGTERM ends the delay at once (to each worker: uvicorn's parent
            # relays only the first): the listener closes, the grace period runs.
            for pid in worker_pids:
                os.kill(pid, signal.SIGTERM)
            wait_until(
                lambda: (
                    worker_pids
                    <= _pids_that_logged(
                        gateway, "Listeners closing; finishing the requests received"
                    )
                ),
                what="every worker to close its listener",
            )
            # The requests received before the listener closed send their images now.
            answers = []
            for sock in admitted:
                with sock:
                    sock.sendall(image)
                    status, _, body = read_http_response(sock)
                    answers.append(Outcome(status, None, json.loads(body).get("trace_id")))
            try:
                exit_code = gateway.process.wait(timeout=GRACE + EXIT_SLACK)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server was still running {GRACE + EXIT_SLACK:g} s after")
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            log = gateway.log_lines()

        assert exit_code == 0, "\n".join(log[-30:])
        assert ready.status_code == 503
        assert ready.json()["type"] == DRAINING
        assert during_delay.status_code == 200, during_delay.text

        # Every request received got its normal answer: nothing was refused.
        assert [a.status for a in answers] == [200] * ADMITTED
        answered = [o for o in outcomes if o.status is not None]
        assert all(o.status == 200 for o in answered), Counter(o.status for o in answered)

        # Exact accounting, including the last moments before exit.
        client_counts = Counter(str(o.status) for o in [*answered, *answers])
        client_counts[str(during_delay.status_code)] += 1
        assert _server_counts(metrics_dir) == client_counts

        # Spans were flushed before exit: every answered prediction's trace arrived.
        with received.lock:
            exported = {trace for name, trace, _ in received.spans if name == "POST /predict"}
        traced = {o.trace_id for o in [*answered, *answers] if o.status == 200}
        assert traced <= exported


def _big_photo() -> bytes:
    """A 1920x1080 JPEG photo (the cat, enlarged)."""
    with Image.open(CAT_PNG) as photo:
        big = photo.convert("RGB").resize((1920, 1080))
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_sigterm_during_a_burst_of_uploads_answers_every_upload_received() -> None:
    """64 clients upload a 1920x1080 JPEG each; SIGTERM comes, with the default
    settings, once the server has every request in hand (``active_requests``) and half
    of each body, the rest still on its way. Every upload is answered 200: all 64, none
    refused, none reset."""
    photo = _big_photo()
    head = (
        "POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    ).encode()
    half = len(photo) // 2
    with gateway_process() as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        uploads = [socket.create_connection((host, int(port)), timeout=120) for _ in range(BURST)]
        try:
            for sock in uploads:
                sock.sendall(head + photo[:half])
            wait_until(  # every upload, and the scrape that asks
                lambda: _active_requests(gateway) >= BURST + 1,
                what="the server to have received every upload",
            )
            gateway.process.send_signal(signal.SIGTERM)
            statuses: list[int | str] = []
            for sock in uploads:
                try:
                    sock.sendall(photo[half:])
                    status, _, body = read_http_response(sock)
                    statuses.append(status if status == 200 else f"{status} {body[:120]!r}")
                except OSError as exc:
                    statuses.append(type(exc).__name__)
        finally:
            for sock in uploads:
                sock.close()
        exit_code = gateway.process.wait(timeout=60)
        log = gateway.log_lines()
    assert exit_code == 0, "\n".join(log[-30:])
    # The grace period (30 s by default) never ran out: nothing was sent away draining.
    assert statuses == [200] * BURST, Counter(statuses)


def test_a_connection_opened_before_the_stop_gets_its_first_request_answered() -> None:
    """A client that connected before SIGTERM and sends its request just after (a busy
    server reads it late, or the client was slow) is a received request: it is
    answered, then the connection is closed."""
    photo = cat_jpeg()
    with gateway_process({"WORKERS": "1"}) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            wait_until(  # accepted by the server (out of the accept queue), nothing sent yet
                lambda: has_accepted(gateway.process.pid, sock),
                what="the server to accept the connection",
            )
            gateway.process.send_signal(signal.SIGTERM)
            # uvicorn logs this once it has closed the connections without a request and
            # found some still open: ours, whose request has not arrived.
            wait_until(
                lambda: any(
                    '"uvicorn.error"' in line and "Waiting for connections to close" in line
                    for line in gateway.log_lines()
                ),
                what="uvicorn to close its idle connections and wait for ours",
            )
            sock.sendall(
                (
                    "POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(photo)}\r\n\r\n"
                ).encode()
                + photo
            )
            status, head, _ = read_http_response(sock)
        assert status == 200
        assert b"connection: close" in head.lower()
        assert gateway.process.wait(timeout=60) == 0


def test_sigterm_with_a_grpc_call_in_flight_answers_it_refuses_later_calls_and_exits_0(
    tmp_path: Path,
) -> None:
    """gRPC in a real server: SIGTERM while a ModelInfer is in the model (held there by a
    closed gate of tests/gated_app.py). ServerReady says false through the delay; once
    the listeners close, a new call is refused UNAVAILABLE; the call in flight still gets
    its answer, and the process exits 0."""
    gate = tmp_path / "gate"
    gate.mkdir()
    grpc_port = free_port()  # with SO_REUSEPORT a worker binds a port it is told
    env = {
        "GATE_DIR": str(gate),
        "GRPC_PORT": str(grpc_port),
        "WORKERS": "1",
        "SHUTDOWN_DELAY_SECONDS": str(SHUTDOWN_DELAY),
        "GRACEFUL_SHUTDOWN_SECONDS": str(GRACE),
    }

    def calls() -> int:
        path = gate / "calls"
        return len(path.read_text().split()) if path.exists() else 0

    with (
        gateway_process(env, args=("--app", "tests.gated_app:app")) as gateway,
        ThreadPoolExecutor(1) as pool,
    ):
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        warmed_up = calls()
        (gate / "closed").touch()
        in_flight = pool.submit(
            client.infer, "efficientnet-lite0", [grpc_images(cat_jpeg())], client_timeout=120
        )
        wait_until(lambda: calls() > warmed_up, what="the call to reach the model")

        gateway.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: bool(_pids_that_logged(gateway, "Shutdown signal received; draining")),
            what="the server to learn of the stop",
        )
        ready_during_delay = client.is_server_ready()
        live_during_delay = client.is_server_live()

        gateway.process.send_signal(signal.SIGTERM)  # ends the delay: the listeners close
        wait_until(
            lambda: bool(
                _pids_that_logged(gateway, "Listeners closing; finishing the requests received")
            ),
            what="the listeners to close",
        )
        later = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        refused = refusal(
            lambda: later.infer("efficientnet-lite0", [grpc_images(cat_jpeg())], client_timeout=30)
        )
        (gate / "closed").unlink()  # the call in flight leaves the model now
        answer = in_flight.result(timeout=60)
        try:
            exit_code = gateway.process.wait(timeout=GRACE + EXIT_SLACK)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still running {GRACE + EXIT_SLACK:g} s after")
        log = gateway.log_lines()
        client.close()
        later.close()

    assert (ready_during_delay, live_during_delay) == (False, True)
    assert refused.status() == "StatusCode.UNAVAILABLE", refused
    scores = answer.as_numpy("logits")
    assert scores is not None and scores.shape == (1, 1000)
    assert int(scores[0].argmax()) in CAT_CLASSES  # the gated model's answer: a tabby
    assert calls() == warmed_up + 1  # the refused call never reached the model
    assert exit_code == 0, "\n".join(log[-30:])
    access = [
        json.loads(line)
        for line in log
        if line.startswith("{") and "/inference.GRPCInferenceService/ModelInfer" in line
    ]
    assert [r["status_code"] for r in access] == [0]  # the answered call; no other reached it
