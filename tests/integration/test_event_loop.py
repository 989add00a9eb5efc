"""No request stalls the event loop: liveness probes are answered while the hostile and
the largest legal bodies are decoded, over HTTP and gRPC, on a real server.

Decoding a request's elements one by one (a JSON body of millions of numbers, millions
of empty ``BYTES`` elements) once ran on the event loop and held it for over a second,
so ``/health`` missed a Kubernetes liveness probe's default timeout. Now the JSON and
typed contents of a large request are decoded on a thread, and ``BYTES`` elements are
bounded by the images a request may carry before any is split out.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx2 as httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.servers import GatewayProcess, gateway_process

pytestmark = pytest.mark.integration
MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
IMAGE_ELEMENTS = 3 * 224 * 224
#: Kubernetes' default liveness probe timeout (``timeoutSeconds: 1``): a loop that is
#: never held answers ``/health`` far within it, even on a busy shared machine.
LIVENESS_PROBE_TIMEOUT = 1.0
#: Empty BYTES elements that fit a 10 MiB body (4-byte length prefixes).
EMPTY_ELEMENTS = 2_600_000


@pytest.fixture(scope="module")
def gateway(grpc_port: int) -> Iterator[GatewayProcess]:
    """A real server; its requests' deadline is long, since what is measured here is the
    loop's answer to probes, not the largest bodies' latency on a busy machine."""
    env = {"GRPC_PORT": str(grpc_port), "WORKERS": "1", "REQUEST_TIMEOUT": "120"}
    with gateway_process(env) as process:
        yield process


@pytest.fixture(scope="module")
def stub(grpc_port: int) -> Iterator[Any]:
    with grpc.insecure_channel(
        f"127.0.0.1:{grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _slowest_probe_while(gateway: GatewayProcess, work: Callable[[], None]) -> float:
    """Run ``work`` on a thread; meanwhile probe ``/health`` back to back. The slowest
    probe's seconds (the probes go on for a moment after the work, so that a loop held
    by the last of it is seen too)."""
    finished = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test below
            failure.append(exc)
        finally:
            finished.set()

    slowest = 0.0
    probes = 0
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        client.get("/health")  # the connection is open before the work starts
        worker = threading.Thread(target=run)
        worker.start()
        while not finished.is_set() or probes < 20:
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            probes += 1
        worker.join()
    if failure:
        raise failure[0]
    return slowest


def _binary_bytes_body(count: int) -> tuple[bytes, dict[str, str]]:
    raw = b"\0\0\0\0" * count  # every element empty
    header = json.dumps(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [count],
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    return header + raw, {"inference-header-content-length": str(len(header))}


def _largest_json_body(images: int, number: str = "0") -> bytes:
    """The longest legal JSON request: the most elements a request may hold, each the
    shortest number JSON has (``0``), just under ``MAX_BODY_BYTES``; or as many
    ``number``s as fit (fractions are parsed without a Python call each)."""
    data = ",".join([number] * (images * IMAGE_ELEMENTS))
    return (
        f'{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{images},3,224,224],'
        f'"data":[{data}]}}]}}'
    ).encode()


def _post(gateway: GatewayProcess, body: bytes, headers: dict[str, str], status: int) -> None:
    answer = httpx.post(f"{gateway.url}{INFER}", content=body, headers=headers, timeout=120)
    assert answer.status_code == status, answer.text[:300]
    if status == 400:  # refused from the shape, before a single element was split out
        assert "BYTES elements are accepted" in answer.json()["error"]


HTTP_CASES: dict[str, tuple[Callable[[], tuple[bytes, dict[str, str]]], int]] = {
    "2.6 M empty BYTES elements in binary": (lambda: _binary_bytes_body(EMPTY_ELEMENTS), 400),
    "2.6 M empty BYTES elements in JSON": (
        lambda: (
            json.dumps({"inputs": [{"name": "input", "datatype": "BYTES",
                                    "shape": [EMPTY_ELEMENTS], "data": [""] * EMPTY_ELEMENTS}]}
                       ).encode(),
            {},
        ),
        400,
    ),
    "the largest legal JSON FP32 body": (lambda: (_largest_json_body(32), {}), 200),
    "the largest JSON body of fractions": (lambda: (_largest_json_body(17, "0.5"), {}), 200),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_health_answers_while_a_large_http_body_is_decoded(
    gateway: GatewayProcess, case: str
) -> None:
    build, status = HTTP_CASES[case]
    body, headers = build()
    assert len(body) <= 10 * 1024 * 1024  # within MAX_BODY_BYTES: the decoder sees it all
    slowest = _slowest_probe_while(gateway, lambda: _post(gateway, body, headers, status))
    assert slowest < LIVENESS_PROBE_TIMEOUT, f"/health took {slowest:.3f} s during {case}"


def _typed(datatype: str, shape: list[int], field: str, values: list[Any]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def _raw_empty_bytes(count: int) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(struct.pack("<I", 0) * count)
    return request


GRPC_CASES: dict[str, tuple[Callable[[], Any], grpc.StatusCode]] = {
    "2.6 M empty BYTES elements raw": (
        lambda: _raw_empty_bytes(EMPTY_ELEMENTS), grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "4 M empty BYTES elements typed": (
        lambda: _typed("BYTES", [4_000_000], "bytes_contents", [b""] * 4_000_000),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "the largest legal typed FP32 message": (
        lambda: _typed("FP32", [16, 3, 224, 224], "fp32_contents", [0.5] * (16 * IMAGE_ELEMENTS)),
        grpc.StatusCode.OK,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_health_answers_while_a_large_grpc_message_is_decoded(
    gateway: GatewayProcess, stub: Any, case: str
) -> None:
    build, code = GRPC_CASES[case]
    request = build()
    assert request.ByteSize() <= 10 * 1024 * 1024  # within the gRPC receive limit

    def call() -> None:
        if code is grpc.StatusCode.OK:
            stub.ModelInfer(request, timeout=120)
            return
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=120)
        assert refused.value.code() is code, refused.value.details()
        assert "BYTES elements are accepted" in str(refused.value.details())

    slowest = _slowest_probe_while(gateway, call)
    assert slowest < LIVENESS_PROBE_TIMEOUT, f"/health took {slowest:.3f} s during {case}"
