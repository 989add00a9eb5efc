"""The Open Inference Protocol over gRPC with the real `tritonclient.grpc`, unchanged.

A real ``inference-gateway serve`` with the built-in model and ``GRPC_PORT``; the client
is NVIDIA's own library with its defaults (raw tensor contents), so what works here
works for users who point their Triton gRPC clients at the gateway. A call held past its
deadline is checked in-process, over a backend the test holds
(tests/unit/test_v2_grpc.py): the real model answers too fast to hold deterministically.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_CLASSES, CAT_PNG, COFFEE_PNG, ESPRESSO, ROCKET_JPG, cat_jpeg
from tests.oip import classes, grpc_images, predict_top1, refusal
from tests.scrape import parse, value
from tests.servers import GatewayProcess, wait_until

MODEL = "efficientnet-lite0"
SERVICE = "/inference.GRPCInferenceService"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(grpc_gateway: GatewayProcess) -> GatewayProcess:
    return grpc_gateway


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, grpc_port: int) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    yield client
    client.close()


def _access_lines(gateway: GatewayProcess, rpc: str) -> list[dict[str, Any]]:
    found = []
    for line in gateway.log_lines():
        if line.startswith("{") and f"{SERVICE}/{rpc}" in line:
            record = json.loads(line)
            if record.get("endpoint") == f"{SERVICE}/{rpc}":
                found.append(record)
    return found


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "inference-gateway"
    assert {"classification", "binary_tensor_data"} <= set(server["extensions"])
    metadata = client.get_model_metadata(MODEL, as_json=True)
    assert metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": ["-1", "3", "224", "224"]}
    ]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "1000"]}]
    config = client.get_model_config(MODEL).config
    assert (config.name, config.platform, config.max_batch_size) == (
        MODEL,
        "onnxruntime_onnx",
        4,
    )
    (model_input,) = config.input
    assert model_input.format == model_input.FORMAT_NCHW and list(model_input.dims) == [3, 224, 224]
    (model_output,) = config.output
    assert list(model_output.dims) == [1000] and model_output.label_filename == "labels.txt"


def test_a_preprocessed_fp32_tensor_gets_the_same_answer_as_predict(
    gateway: GatewayProcess, client: triton.InferenceServerClient
) -> None:
    data = CAT_PNG.read_bytes()
    tensor = prepare_image(data, ImageLimits(), PreprocessConfig()).tensor[None]
    image = triton.InferInput("input", list(tensor.shape), "FP32")
    image.set_data_from_numpy(tensor)
    result = client.infer(MODEL, [image], request_id="req-7")
    confidences = result.as_numpy("logits")
    assert confidences is not None and confidences.shape == (1, 1000)
    assert confidences.dtype == np.float32
    assert abs(float(confidences.sum()) - 1.0) < 1e-4  # the model's softmax
    assert int(np.argmax(confidences[0])) == predict_top1(gateway, data)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-7", MODEL, "1")


def test_encoded_jpeg_and_png_images_as_bytes_with_class_count(
    gateway: GatewayProcess, client: triton.InferenceServerClient
) -> None:
    photos = [cat_jpeg(), COFFEE_PNG.read_bytes(), ROCKET_JPG.read_bytes()]
    top = triton.InferRequestedOutput("logits", class_count=3)
    answers = classes(client.infer(MODEL, [grpc_images(*photos)], outputs=[top]))
    assert len(answers) == 3 and all(len(a) == 3 for a in answers)
    assert answers[0][0][1] in CAT_CLASSES and answers[1][0][1] == ESPRESSO
    for photo, answer in zip(photos, answers, strict=True):
        assert answer[0][1] == predict_top1(gateway, photo)
        assert [score for score, _, _ in answer] == sorted((s for s, _, _ in answer), reverse=True)
        assert all(label for _, _, label in answer)


def test_errors_as_the_client_surfaces_them(client: triton.InferenceServerClient) -> None:
    corrupt = grpc_images(b"not an image")
    unknown = refusal(lambda: client.infer("nope", [corrupt]))
    assert unknown.status() == "StatusCode.NOT_FOUND" and "nope" in unknown.message()
    bad = refusal(lambda: client.infer(MODEL, [corrupt]))
    assert bad.status() == "StatusCode.INVALID_ARGUMENT" and "image" in bad.message().lower()
    wrong = triton.InferInput("input", [1, 3, 100, 100], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 100, 100), dtype=np.float32))
    shape = refusal(lambda: client.infer(MODEL, [wrong]))
    assert shape.status() == "StatusCode.INVALID_ARGUMENT"
    assert "[N, 3, 224, 224]" in shape.message()


def test_the_access_line_carries_the_trace_of_the_callers_traceparent(
    gateway: GatewayProcess, client: triton.InferenceServerClient
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traceparent = f"00-{trace_id}-b7ad6b7169203331-01"
    client.infer(
        MODEL,
        [grpc_images(cat_jpeg())],
        request_id="traced",
        headers={"traceparent": traceparent, "x-request-id": "grpc-traced-1"},
    )

    def traced_lines() -> list[dict[str, Any]]:
        return [r for r in _access_lines(gateway, "ModelInfer") if r.get("trace_id") == trace_id]

    wait_until(lambda: bool(traced_lines()), what="the call's access line")
    (line,) = traced_lines()
    assert line["message"] == "Inference completed" and line["level"] == "INFO"
    assert (line["method"], line["status_code"], line["request_id"]) == ("gRPC", 0, "grpc-traced-1")
    assert line["model_name"] == MODEL and line["prediction_class"]


def test_grpc_requests_total_counts_the_calls(
    gateway: GatewayProcess, client: triton.InferenceServerClient
) -> None:
    def count(method: str, code: str) -> float:
        samples = parse(httpx.get(f"{gateway.url}/metrics").text)
        return value(samples, "grpc_requests_total", grpc_method=method, code=code)

    before = {
        "ok": count("ModelInfer", "OK"),
        "not_found": count("ModelInfer", "NOT_FOUND"),
        "ready": count("ServerReady", "OK"),
    }
    client.infer(MODEL, [grpc_images(cat_jpeg())])
    client.infer(MODEL, [grpc_images(cat_jpeg(), cat_jpeg())])
    refusal(lambda: client.infer("nope", [grpc_images(cat_jpeg())]))
    assert client.is_server_ready()
    assert count("ModelInfer", "OK") - before["ok"] == 2
    assert count("ModelInfer", "NOT_FOUND") - before["not_found"] == 1
    assert count("ServerReady", "OK") - before["ready"] == 1
    assert count("ModelInfer", "INTERNAL") == 0
