"""The hostile catalogue of the Open Inference Protocol over gRPC, on a real server.

Every bad ``ModelInferRequest`` a client can build — shapes, datatypes, element counts
and raw lengths that do not add up, NaN, a huge ``N``, a corrupt image inside
``BYTES`` — sent with a plain stub of the service definition (no client library to
tidy it up) to a real ``inference-gateway serve``: each is ``INVALID_ARGUMENT`` with a
clear message, one access line, no new metric series, and the server stays ready.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx2 as httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests import scrape
from tests.images import cat_jpeg
from tests.servers import GatewayProcess, wait_until

MODEL = "efficientnet-lite0"
pytestmark = pytest.mark.integration
Request = service_pb2.ModelInferRequest


def _tensor(datatype: str, shape: list[int], raw: bytes, **extra: Any) -> Any:
    request = Request(model_name=MODEL, **extra)
    request.inputs.add(name="input", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def _bytes(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def _images(*photos: bytes, shape: list[int] | None = None) -> Any:
    return _tensor("BYTES", shape or [len(photos)], _bytes(*photos))


def _two_inputs() -> Any:
    request = _images(b"x")
    request.inputs.add(name="second", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(_bytes(b"y"))
    return request


def _raw_and_typed() -> Any:
    request = Request(model_name=MODEL)
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"x")
    request.raw_input_contents.append(_bytes(b"x"))
    return request


def _output(name: str, classification: int | None = None, **parameters: Any) -> Any:
    request = _images(cat_jpeg())
    output = request.outputs.add(name=name)
    if classification is not None:
        output.parameters["classification"].int64_param = classification
    for key, value in parameters.items():
        output.parameters[key].string_param = value
    return request


NAN = np.full((1, 3, 224, 224), np.nan, dtype=np.float32).tobytes()
#: Finite, but the model's scores overflow to infinities: the input's fault, not a 500.
HUGE = np.full((1, 3, 224, 224), 3e38, dtype=np.float32).tobytes()

#: name -> (the request, what the status message says)
HOSTILE: dict[str, tuple[Callable[[], Any], str]] = {
    "raw length and shape disagree": (lambda: _tensor("FP32", [1, 3, 224, 224], b"\0" * 4), ""),
    "wrong image size": (
        lambda: _tensor("FP32", [1, 3, 2, 2], b"\0" * 48), "[N, 3, 224, 224]",
    ),
    "unknown datatype": (lambda: _tensor("FP128", [1], b"\0" * 16), "FP128"),
    "integer tensor": (
        lambda: _tensor("INT32", [1, 3, 224, 224], b"\0" * (4 * 3 * 224 * 224)), "INT32",
    ),
    "NaN in a tensor": (lambda: _tensor("FP32", [1, 3, 224, 224], NAN), ""),
    "negative dimension": (lambda: _tensor("FP32", [-1, 3, 224, 224], b""), ""),
    "huge N": (lambda: _tensor("FP32", [10**12, 3, 224, 224], b"\0" * 4), ""),
    "a zero beside 4.6e18": (lambda: _tensor("FP32", [0, 2**62, 4], b""), "dimension 1"),
    "65 dimensions of one": (lambda: _tensor("FP32", [1] * 65, b"\0" * 4), "dimensions"),
    "a tensor of 3e38 overflows the model": (
        lambda: _tensor("FP32", [1, 3, 224, 224], HUGE), "not finite",
    ),
    "too many images": (lambda: _images(*([b"x"] * 33)), "MAX_IMAGES_PER_REQUEST"),
    "BYTES length prefix overruns": (
        lambda: _tensor("BYTES", [1], struct.pack("<I", 1000) + b"abc"), "",
    ),
    "BYTES shape of three dimensions": (lambda: _images(b"x", shape=[1, 1, 1]), ""),
    "corrupt image in BYTES": (lambda: _images(b"\xff\xd8\xffjunk"), ""),
    "empty image in BYTES": (lambda: _images(b""), ""),
    "more raw contents than inputs": (
        lambda: _tensor("BYTES", [1], _bytes(b"x"), raw_input_contents=[_bytes(b"y")]), "",
    ),
    "raw and typed contents together": (_raw_and_typed, ""),
    "two inputs": (_two_inputs, "one input"),
    "unknown output": (lambda: _output("nope"), "no output 'nope'"),
    "negative class count": (lambda: _output("logits", classification=-3), "classification"),
    "shared memory output": (
        lambda: _output("logits", shared_memory_region="region"), "shared memory",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(grpc_gateway: GatewayProcess) -> GatewayProcess:
    return grpc_gateway


@pytest.fixture(scope="module")
def stub(gateway: GatewayProcess, grpc_port: int) -> Iterator[Any]:
    """A plain stub, warmed with one good and one bad call so that every series a
    healthy server has exists before the cases are measured."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(_images(cat_jpeg()), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(_images(b"junk"), timeout=30)
        stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10)
        httpx.get(f"{gateway.url}/ready")
        httpx.get(f"{gateway.url}/metrics")
        yield stub


def _lines(gateway: GatewayProcess, request_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in gateway.log_lines()
        if line.startswith("{") and request_id in line
    ]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_bad_call_is_invalid_argument_and_changes_nothing(
    gateway: GatewayProcess, stub: Any, case: str
) -> None:
    build, says = HOSTILE[case]
    request_id = "hostile-" + case.replace(" ", "-")
    before = scrape.parse(httpx.get(f"{gateway.url}/metrics").text)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(build(), timeout=30, metadata=[("x-request-id", request_id)])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    message = refused.value.details()
    assert says in message and "Traceback" not in message and len(message) < 500
    wait_until(lambda: bool(_lines(gateway, request_id)), what="the access line")
    (line,) = _lines(gateway, request_id)
    assert (line["level"], line["status_code"]) == ("WARNING", 3)
    after = scrape.parse(httpx.get(f"{gateway.url}/metrics").text)
    grown = {name for name, _ in set(after) - set(before)}
    allowed = {"model_predictions_total", "model_predictions_created"}
    if "3e38" in case:  # the model did give non-finite scores: counted, as the input's
        allowed |= {"model_inference_errors_total", "model_inference_errors_created"}
    assert grown <= allowed
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
    assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
