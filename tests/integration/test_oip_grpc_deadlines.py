"""gRPC deadlines against a real ``inference-gateway serve`` with two workers.

The server is ``serve --workers 2 --app tests.gated_app:app``: the whole gateway over a
backend the test holds or slows through files (tests/gated_app.py), which writes one
line per forward pass. That file is the model's own record: a call that must not reach
the model must leave no line there. All calls of a test go through one channel, so one
HTTP/2 connection and one worker (the kernel spreads connections over the workers that
share the port, not the calls of a connection); the metrics are the sum of both workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
import tritonclient.grpc as triton

from tests.gate import Gate
from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.oip import grpc_images, refusal
from tests.scrape import Samples, parse, total
from tests.servers import GatewayProcess, free_port, gateway_process

pytestmark = pytest.mark.integration

MODEL = "efficientnet-lite0"
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def grpc_port() -> int:
    # Both workers bind it (SO_REUSEPORT): it must be known before they start.
    return free_port()


@pytest.fixture(scope="module")
def server(gate: Gate, grpc_port: int) -> Iterator[GatewayProcess]:
    env = {
        "GATE_DIR": str(gate.dir),
        "GRPC_PORT": str(grpc_port),
        "MAX_BATCH_SIZE": "1",
        "REQUEST_TIMEOUT": "60",
    }
    args = ("--workers", "2", "--app", "tests.gated_app:app")
    with gateway_process(env, args=args) as process:
        yield process


@pytest.fixture
def client(server: GatewayProcess, gate: Gate, grpc_port: int) -> Iterator[Any]:
    """One channel to the server (so one worker), the gate open and fast around it."""
    gate.open()
    gate.delay(0)
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        yield client
    finally:
        gate.open()
        gate.delay(0)
        client.close()


def _metrics(server: GatewayProcess) -> Samples:
    return parse(httpx.get(f"{server.url}/metrics", timeout=10).text)


def _infer_codes(server: GatewayProcess) -> list[int]:
    return [
        record["status_code"]
        for record in (json.loads(line) for line in server.log_lines() if line.startswith("{"))
        if record.get("endpoint") == INFER
    ]


def _infer(client: Any, timeout: float | None = None) -> Any:
    return client.infer(MODEL, [grpc_images(cat_jpeg())], client_timeout=timeout)


def test_a_call_whose_deadline_passes_in_the_queue_never_reaches_the_model(
    server: GatewayProcess, gate: Gate, client: Any
) -> None:
    """The model holds one call; a second waits behind it and its 0.5 s deadline
    passes there: the caller gets DEADLINE_EXCEEDED, and when the model is free again
    it runs the first call only."""
    codes_before = len(_infer_codes(server))
    timeouts_before = total(
        _metrics(server), "grpc_requests_total", grpc_method="ModelInfer", code="DEADLINE_EXCEEDED"
    )
    passes = gate.passes()
    gate.close()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_infer, client, 120)
        wait_until(lambda: gate.passes() == passes + 1, what="the first call in the model")
        late = refusal(lambda: _infer(client, 0.5))
        # The server's side of it: the queued call ended, logged with its code (4).
        wait_until(lambda: len(_infer_codes(server)) == codes_before + 1, what="its access line")
        gate.open()
        answer = held.result(timeout=60)
    assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert _infer_codes(server)[codes_before:] == [4, 0]  # the late call, then the held one
    scores = answer.as_numpy("logits")
    assert scores is not None and scores.shape == (1, 1000)
    # The model ran the held call and nothing else: the late one was dropped unrun.
    assert gate.passes() == passes + 1
    after = _metrics(server)
    assert (
        total(after, "grpc_requests_total", grpc_method="ModelInfer", code="DEADLINE_EXCEEDED")
        == timeouts_before + 1
    )


def test_a_call_whose_deadline_the_queue_cannot_meet_is_refused_at_once(
    server: GatewayProcess, gate: Gate, client: Any
) -> None:
    """Forward passes take 400 ms; with one in the model, a call that allows 200 ms
    cannot be answered in time: it is refused RESOURCE_EXHAUSTED without queueing (the
    reason counted as ``deadline_unreachable``), and never reaches the model."""
    gate.delay(400)
    for _ in range(4):  # what the worker measures a pass at: the median of its last ones
        _infer(client, 60)
    rejected_before = total(
        _metrics(server), "requests_rejected_total", reason="deadline_unreachable"
    )
    passes = gate.passes()
    gate.close()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_infer, client, 120)
        wait_until(lambda: gate.passes() == passes + 1, what="a call in the model")
        refused = refusal(lambda: _infer(client, 0.2))
        gate.open()
        held.result(timeout=60)
    assert refused.status() == "StatusCode.RESOURCE_EXHAUSTED", refused
    assert "deadline" in refused.message(), refused.message()
    assert gate.passes() == passes + 1
    rejected = total(_metrics(server), "requests_rejected_total", reason="deadline_unreachable")
    assert rejected == rejected_before + 1
