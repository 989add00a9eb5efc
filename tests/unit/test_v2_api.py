"""The Open Inference Protocol in-process: every bad request a clear 400 ``{"error"}``,
no new metric series, the server still answering; and the same answers as /predict."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests import scrape
from tests.helpers import json_log_capture, ready_client, real_app
from tests.images import CAT_PNG, cat_jpeg

INFER = "/v2/models/efficientnet-lite0/infer"


def _json(tensor: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": [tensor], **extra}).encode()


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def _binary_fp32(array: np.ndarray) -> bytes:  # type: ignore[type-arg]
    raw = array.tobytes()
    header = _json(
        {"name": "input", "datatype": "FP32", "shape": list(array.shape),
         "parameters": {"binary_data_size": len(raw)}}
    )  # fmt: skip
    _BINARY["inference-header-content-length"] = str(len(header))
    return header + raw


_BINARY: dict[str, str] = {}

#: name -> (body, headers, what the error says)
HOSTILE: dict[str, tuple[bytes, dict[str, str], str]] = {
    "not json": (b"{nope", {}, "JSON"),
    "shape and data disagree": (
        _json({"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [1.0]}),
        {}, "",
    ),
    "wrong image size": (
        _json({"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.0] * 12}),
        {}, "[N, 3, 224, 224]",
    ),
    "unknown datatype": (
        _json({"name": "input", "datatype": "FP128", "shape": [1], "data": [1]}), {}, "FP128",
    ),
    "integer tensor": (
        _json({"name": "input", "datatype": "INT32", "shape": [1, 3, 224, 224],
               "data": [0] * (3 * 224 * 224)}), {}, "INT32",
    ),
    "NaN in a tensor": (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
        {}, "",
    ),
    "binary size overruns the body": (
        b'{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], '
        b'"parameters": {"binary_data_size": 1000}}]}',
        {"inference-header-content-length": "94"}, "",
    ),
    "header length not a number": (b"{}", {"inference-header-content-length": "x"}, ""),
    # Python will not convert more than 4,300 digits (ValueError), nor numpy take > 64
    # dimensions or a dimension past int64; a model fed 3e38 overflows to infinities.
    "header length of 5,000 digits": (
        b"{}", {"inference-header-content-length": "1" * 5000}, "digits",
    ),
    "a JSON integer of 5,000 digits": (
        b'{"inputs": [], "id": "x", "n": ' + b"7" * 5000 + b"}", {}, "digits",
    ),
    "65 dimensions of one": (
        _json({"name": "input", "datatype": "FP32", "shape": [1] * 65, "data": [1.0]}),
        {}, "dimensions",
    ),
    "a zero beside 10**30": (
        _json({"name": "input", "datatype": "FP32", "shape": [0, 10**30], "data": []}), {}, "",
    ),
    "a zero beside 2**62": (
        _json({"name": "input", "datatype": "FP32", "shape": [0, 2**62, 4], "data": []}),
        {}, "dimension 1",
    ),
    "a tensor of 3e38 overflows the model": (
        _binary_fp32(np.full((1, 3, 224, 224), 3e38, dtype=np.float32)), _BINARY, "not finite",
    ),
    "too many images": (
        _json({"name": "input", "datatype": "BYTES", "shape": [33], "data": ["x"] * 33}),
        {}, "",
    ),
    "corrupt image in BYTES": (
        _json({"name": "input", "datatype": "BYTES", "shape": [1], "data": [_b64(b"\xff\xd8\xffjunk")]}),
        {}, "",
    ),
    "two inputs": (
        json.dumps({"inputs": [
            {"name": "a", "datatype": "BYTES", "shape": [1], "data": ["x"]},
            {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["y"]},
        ]}).encode(),
        {}, "one input",
    ),
    "unknown output": (
        _json({"name": "input", "datatype": "BYTES", "shape": [1], "data": [_b64(cat_jpeg())]},
              outputs=[{"name": "nope"}]),
        {}, "no output 'nope'",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def warm_client(real_app_client: TestClient) -> TestClient:
    """The shared app after one good and one bad request of each kind the cases make, so
    every series a healthy server has exists before the cases are measured."""
    good = _json({"name": "input", "datatype": "BYTES", "shape": [1], "data": [_b64(cat_jpeg())]})
    assert real_app_client.post(INFER, content=good).status_code == 200
    assert real_app_client.post(INFER, content=b"{nope").status_code == 400
    real_app_client.get("/v2/health/ready")
    real_app_client.get("/metrics")
    return real_app_client


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_bad_request_is_a_400_error_and_changes_nothing(
    warm_client: TestClient, case: str
) -> None:
    real_app_client = warm_client
    body, headers, says = HOSTILE[case]
    before = scrape.parse(real_app_client.get("/metrics").text)
    answer = real_app_client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert says in error and "Traceback" not in error
    after = scrape.parse(real_app_client.get("/metrics").text)
    grown = {name for name, _ in set(after) - set(before)}
    allowed = {"model_predictions_total", "model_predictions_created"}
    if "3e38" in case:  # the model did give non-finite scores: counted, as the input's
        allowed |= {"model_inference_errors_total", "model_inference_errors_created"}
    assert grown <= allowed
    assert real_app_client.get("/v2/health/ready").json() == {"ready": True}


def test_json_tensors_and_base64_images_answer_as_predict(real_app_client: TestClient) -> None:
    data = CAT_PNG.read_bytes()
    expected = real_app_client.post(
        "/predict", content=data, headers={"content-type": "image/png"}
    ).json()["predictions"][0]
    tensor = prepare_image(data, ImageLimits(), PreprocessConfig()).tensor
    as_tensor = real_app_client.post(
        INFER,
        content=_json(
            {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
             "data": tensor.ravel().tolist()},
            id="t-1",
        ),
    )  # fmt: skip
    assert as_tensor.status_code == 200, as_tensor.text
    body = as_tensor.json()
    assert body["id"] == "t-1" and body["model_name"] == "efficientnet-lite0"
    (scores,) = body["outputs"]
    assert scores["shape"] == [1, 1000] and scores["datatype"] == "FP32"
    assert int(np.argmax(scores["data"])) == expected["class_id"]
    assert scores["data"][expected["class_id"]] == pytest.approx(expected["confidence"], abs=1e-5)
    as_image = real_app_client.post(
        INFER,
        content=_json(
            {"name": "input", "datatype": "BYTES", "shape": [1], "data": [_b64(data)]},
            outputs=[{"name": "logits", "parameters": {"classification": 1}}],
        ),
    )
    assert as_image.status_code == 200, as_image.text
    ((best,),) = [o["data"] for o in as_image.json()["outputs"]]
    _, index, label = best.split(":", 2)
    assert (int(index), label) == (expected["class_id"], expected["label"])


def test_unknown_models_are_404_errors_and_not_ready_is_503(real_app_client: TestClient) -> None:
    answer = real_app_client.post("/v2/models/nope/infer", content=b"{}")
    assert answer.status_code == 404 and "nope" in answer.json()["error"]
    assert real_app_client.get("/v2/models/nope/ready").status_code == 404
    assert real_app_client.get("/v2/models/efficientnet-lite0/versions/9").status_code == 404


def test_no_bad_request_logs_an_error_or_counts_against_the_slo() -> None:
    """What a client sends wrong is a WARNING on its one access line and a 4xx in
    ``http_requests_total``: no ERROR line (whose alerts page people), no 5xx (the SLO's
    bad events), whichever case it is."""
    with json_log_capture() as logs, TestClient(real_app()) as client:
        ready_client(client)
        for case, (body, headers, _) in HOSTILE.items():
            answer = client.post(INFER, content=body, headers=headers)
            assert answer.status_code == 400, (case, answer.text)
        samples = scrape.parse(client.get("/metrics").text)
    records = [json.loads(line) for line in logs.getvalue().splitlines() if line]
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    answered = {
        dict(labels)["status"]: v for (name, labels), v in samples.items()
        if name == "http_requests_total" and dict(labels)["endpoint"] == "/v2/models/{name}/infer"
    }  # fmt: skip
    assert {status: v for status, v in answered.items() if v} == {"400": len(HOSTILE)}


def test_an_unexpected_failure_on_v2_is_the_protocols_error_body() -> None:
    """A bug below a ``/v2`` route is still ``{"error"}`` (tritonclient reads it), with
    no internals, and logged once at ERROR with its traceback."""
    app = real_app()
    with json_log_capture() as logs, TestClient(app) as client:
        ready_client(client)
        registry = app.state.registry

        def broken(*_: object) -> None:
            raise ZeroDivisionError("a bug deep inside")

        registry.names = broken
        answer = client.get("/v2/models")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert set(answer.json()) == {"error"} and "ZeroDivision" not in answer.text
    (line,) = [json.loads(x) for x in logs.getvalue().splitlines() if '"/v2/models"' in x]
    assert (line["level"], line["error_type"]) == ("ERROR", "ZeroDivisionError")
    assert line["exception"][0]["exc_type"] == "ZeroDivisionError"


def test_the_readmes_json_request_with_b64_bytes_is_answered(real_app_client: TestClient) -> None:
    """The README's raw JSON request (a PNG as ``{"b64": ...}``, the form for bytes that
    are not UTF-8) is sent as written and answered with the classes it asks for."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    (example,) = [block for block in blocks if '"b64"' in block]
    answer = real_app_client.post(
        INFER, content=example.encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [1, 3])
    for entry in output["data"]:
        score, index, label = entry.split(":", 2)
        assert 0 <= float(score) <= 1 and 0 <= int(index) < 1000 and label
