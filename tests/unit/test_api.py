"""The HTTP API end to end in-process: real photos, real model, every error shape."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference_gateway.app import create_app
from inference_gateway.inference.model import load_configured_model
from tests import scrape
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    controlled_class,
    controlled_loader,
    held_batch,
    held_prediction,
    make_settings,
    ready_client,
)
from tests.images import CAT_CLASSES, CAT_PNG, COFFEE_PNG, ESPRESSO, cat_jpeg, encode, gradient

PROBLEM = "application/problem+json"
JPEG = {"content-type": "image/jpeg"}
#: A request deadline no image here takes to read and decode, on any machine.
LONG_DEADLINE_MS = 2000


def assert_problem(response, status: int, slug: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:inference-gateway:problem:{slug}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    return body  # type: ignore[no-any-return]


class TestRealPhotos:
    """The embedded model classifies real photographs through the whole stack."""

    def test_cat_photo_has_a_cat_class_in_the_top_5(self, real_app_client: TestClient) -> None:
        with CAT_PNG.open("rb") as f:
            response = real_app_client.post("/predict", files={"file": ("cat.png", f, "image/png")})
        assert response.status_code == 200, response.text
        body = response.json()
        classes = [p["class_id"] for p in body["predictions"]]
        assert len(classes) == 5
        assert CAT_CLASSES & set(classes)
        confidences = [p["confidence"] for p in body["predictions"]]
        assert confidences == sorted(confidences, reverse=True)
        assert 0 < sum(confidences) <= 1.0 + 1e-9
        # The default backend, the one users run.
        assert body["model"] == {
            "name": "efficientnet-lite0",
            "version": "1",
            "backend": "onnxruntime",
        }
        assert body["request_id"] == response.headers["x-request-id"]
        assert body["image"] == {
            "format": "png",
            "width": 451,
            "height": 300,
            "size_bytes": CAT_PNG.stat().st_size,
        }
        assert set(body["timings_ms"]) == {"preprocess", "queue", "inference", "total"}
        timing = response.headers["server-timing"]
        for stage in ("preprocess", "queue", "inference", "total"):
            assert f"{stage};dur=" in timing

    def test_espresso_photo_is_espresso_top_1(self, real_app_client: TestClient) -> None:
        response = real_app_client.post(
            "/predict", content=COFFEE_PNG.read_bytes(), headers={"content-type": "image/png"}
        )
        assert response.status_code == 200
        top = response.json()["predictions"][0]
        assert top["class_id"] == ESPRESSO and top["label"] == "espresso"

    @pytest.mark.parametrize("declared", ["image/png", "application/octet-stream", "image/jpeg"])
    def test_format_is_decided_by_bytes_not_declared_type(
        self, real_app_client: TestClient, declared: str
    ) -> None:
        response = real_app_client.post(
            "/predict?top_k=5", content=cat_jpeg(), headers={"content-type": declared}
        )
        assert response.status_code == 200
        assert response.json()["image"]["format"] == "jpeg"
        assert CAT_CLASSES & {p["class_id"] for p in response.json()["predictions"]}

    @pytest.mark.parametrize("k", [1, 3, 20])
    def test_top_k_bounds_the_number_of_predictions(
        self, real_app_client: TestClient, k: int
    ) -> None:
        response = real_app_client.post(
            f"/predict?top_k={k}", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
        )
        assert len(response.json()["predictions"]) == k

    @pytest.mark.parametrize(
        ("fmt", "mode"),
        [("JPEG", "CMYK"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB"),
         ("TIFF", "RGB"), ("PNG", "I;16"), ("PNG", "LA"), ("PNG", "1")],
    )  # fmt: skip
    def test_each_format_classifies_over_http(
        self, real_app_client: TestClient, fmt: str, mode: str
    ) -> None:
        image = (
            gradient().convert(mode) if mode != "I;16" else gradient().convert("I").convert("I;16")
        )
        response = real_app_client.post(
            "/predict", files={"file": ("x", encode(image, fmt), "application/octet-stream")}
        )
        assert response.status_code == 200, response.text
        assert response.json()["image"]["format"] == fmt.lower()


def test_unknown_route_and_wrong_method_are_problems(fake_client: TestClient) -> None:
    assert_problem(fake_client.get("/nope"), 404, "not-found")
    assert_problem(fake_client.get("/predict"), 405, "method-not-allowed")


def test_client_request_id_is_echoed_when_sane_and_replaced_when_not(
    fake_client: TestClient,
) -> None:
    sane = fake_client.get("/health", headers={"x-request-id": "abc-123"})
    assert sane.headers["x-request-id"] == "abc-123"
    for bad in ("has space", "x" * 200, "semi;colon", "caf\u00e9"):
        response = fake_client.get("/health", headers={"x-request-id": bad.encode()})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 36


def test_forward_pass_failure_is_a_500_problem_without_internals(
    fake_client: TestClient, controlled_backend: ControlledBackend
) -> None:
    controlled_backend.fail_with = RuntimeError("CUDA exploded at /secret/path.py line 3")
    response = fake_client.post(
        "/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
    )
    body = assert_problem(response, 500, "inference-failed")
    assert "secret" not in response.text and "CUDA" not in response.text
    assert body["detail"] == "The model failed on this input."


def test_unexpected_exception_is_a_generic_500_problem() -> None:
    backend = ControlledBackend()
    app = controlled_app(backend)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("/etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "passwd" not in response.text
    assert "request_id" in str(body["detail"])


def test_deadline_from_header_gives_504_while_model_is_busy() -> None:
    backend = ControlledBackend(blocked=True)
    with TestClient(controlled_app(backend, model_warmup=False)) as client:
        ready_client(client)
        # The model never answers; the deadline is far longer than reading and decoding
        # the image, so it passes while the request is held in the model.
        response = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={"content-type": "image/jpeg", "x-request-timeout-ms": str(LONG_DEADLINE_MS)},
        )
        body = assert_problem(response, 504, "timeout")
        assert body["reason"] == "deadline_exceeded"
        assert backend.calls == 1  # it was in the model when its deadline passed
        bad = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={"content-type": "image/jpeg", "x-request-timeout-ms": "soon"},
        )
        assert_problem(bad, 400, "invalid-input")
        backend.release.set()


def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    backend = ControlledBackend(blocked=True)
    app = controlled_app(backend, model_warmup=False, max_queue_size=1, max_batch_size=1)
    with TestClient(app) as client:
        ready_client(client)
        # One request runs (held in the model), one waits: the queue of 1 is full.
        with held_prediction(client, backend, count=2) as held:
            refused = client.post("/predict", content=cat_jpeg(), headers=JPEG)
            body = assert_problem(refused, 503, "queue-full")
            assert body["reason"] == "queue_full"
            assert refused.headers["retry-after"] == "1"
            assert backend.calls == 1
        assert held == [200, 200]


def test_ready_is_503_until_the_model_is_warm_and_health_is_200_throughout() -> None:
    gate = threading.Event()
    backend = ControlledBackend()
    load = controlled_loader(backend)

    def slow_load():  # type: ignore[no-untyped-def]
        gate.wait(timeout=60)
        return load()

    app = create_app(make_settings(), model_loader=slow_load, configure_logging=False)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        not_ready = client.get("/ready")
        body = assert_problem(not_ready, 503, "model-not-ready")
        assert body["reason"] == "not_ready" and not_ready.headers["retry-after"]
        early = client.post("/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg"})
        assert_problem(early, 503, "model-not-ready")
        gate.set()
        ready_client(client)
        assert client.get("/ready").json()["model"]["name"] == "efficientnet-lite0"


def test_health_answers_while_a_slow_prediction_is_in_flight() -> None:
    backend = ControlledBackend(blocked=True)
    with TestClient(controlled_app(backend, model_warmup=False)) as client:
        ready_client(client)
        with held_prediction(client, backend) as held:
            assert client.get("/health").json() == {"status": "ok"}
            assert held == []  # the prediction is still held in the model
        assert held == [200]


def test_openapi_documents_predict_with_its_schemas(fake_client: TestClient) -> None:
    spec = fake_client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) >= {"multipart/form-data", "image/*"}
    assert "PredictionResponse" in spec["components"]["schemas"]
    assert "504" in predict["responses"]
    assert fake_client.get("/docs").status_code == 200


def test_docs_can_be_switched_off() -> None:
    app = controlled_app(ControlledBackend(), enable_docs=False)
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404


def _solid(rgb: tuple[int, int, int]) -> bytes:
    return encode(Image.new("RGB", (96, 64), rgb), "PNG")


def test_requests_batched_together_each_get_their_own_row() -> None:
    """Distinct images in one forward pass: each answer is its own image's class."""
    colours = [(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 200, 30), (30, 30, 200),
               (128, 128, 128), (250, 200, 0)]  # fmt: skip
    images = [cat_jpeg(), *(_solid(c) for c in colours)]
    expected = [controlled_class(image) for image in images]
    assert len(set(expected)) == len(images)  # every image has a class of its own
    backend = ControlledBackend(blocked=True)
    app = controlled_app(backend, model_warmup=False, max_batch_size=len(images))
    with TestClient(app) as client:
        ready_client(client)
        responses = held_batch(client, backend, images)
    assert backend.batch_sizes == [1, len(images) - 1]  # the seven ran together
    answers = [r.json()["predictions"][0]["class_id"] for r in responses]
    assert answers == expected


def test_real_model_answers_each_request_of_a_shared_forward_pass() -> None:
    """End to end on the real ONNX model: a batch of cats and espressos, each right."""
    model = load_configured_model(make_settings())
    backend = ControlledBackend(blocked=True, model=model.backend)
    app = controlled_app(backend, model_warmup=False, max_batch_size=8)
    kinds = ["cat", "espresso", "espresso", "cat", "espresso", "cat", "cat", "espresso"]
    photos = {"cat": cat_jpeg(), "espresso": COFFEE_PNG.read_bytes()}
    with TestClient(app) as client:
        ready_client(client)
        responses = held_batch(client, backend, [photos[kind] for kind in kinds])
        samples = scrape.parse(client.get("/metrics").text)
    assert backend.batch_sizes == [1, 7]
    for kind, response in zip(kinds, responses, strict=True):
        assert response.status_code == 200, response.text
        top = response.json()["predictions"][0]["class_id"]
        assert top in (CAT_CLASSES if kind == "cat" else {ESPRESSO}), (kind, top)
    model_name = "efficientnet-lite0"
    assert (
        scrape.value(
            samples, "inference_batch_size_count", model_name=model_name, model_version="1"
        )
        == 2
    )
    assert (
        scrape.value(samples, "inference_batch_size_sum", model_name=model_name, model_version="1")
        == 8
    )


def test_cors_is_closed_by_default_and_open_only_to_listed_origins() -> None:
    preflight = {
        "origin": "https://evil.example",
        "access-control-request-method": "POST",
    }
    with TestClient(controlled_app(ControlledBackend())) as client:
        ready_client(client)
        response = client.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        simple = client.get("/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
    app = controlled_app(ControlledBackend(), cors_origins=["https://app.example"])
    with TestClient(app) as client:
        ready_client(client)
        allowed = client.options("/predict", headers={**preflight, "origin": "https://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = client.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in denied.headers
