"""A model that misbehaves for some inputs costs only those requests, never the server.

The real model (the default ONNX Runtime backend) is wrapped in a backend that answers
wrongly whenever the model sees an espresso: the coffee photo. A batch holding the cat
photo and the coffee photo must answer the cat, fail the coffee with 500
``inference-failed``, and leave the server serving and ready.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx2 as httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from inference_gateway.inference.backends import Backend
from inference_gateway.inference.batcher import MAX_CONSECUTIVE_CRASHES
from inference_gateway.inference.model import LoadedModel, load_configured_model
from tests import scrape
from tests.helpers import make_settings, wait_until
from tests.images import CAT_CLASSES, COFFEE_PNG, ESPRESSO, cat_jpeg

JPEG = {"content-type": "image/jpeg"}
PNG = {"content-type": "image/png"}


class _Escape(BaseException):
    """Not an ``Exception``: it breaks out of any ``except Exception``."""


class EspressoAllergy:
    """The real backend, answering wrongly (``fault``) for every batch with an espresso.

    ``gate`` holds each forward pass until it is set, so tests can line up a batch.
    """

    name = "espresso-allergy"

    def __init__(self, inner: Backend, fault: str | None) -> None:
        self.inner = inner
        self.fault = fault
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    @property
    def memory_bytes(self) -> int:
        return self.inner.memory_bytes

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(timeout=30)
        logits = self.inner.predict(batch)
        espresso = [i for i, row in enumerate(logits) if int(np.argmax(row)) == ESPRESSO]
        if not espresso or self.fault is None:
            return logits
        wrong: dict[str, object] = {
            "fewer rows": logits[:-1],
            "more rows": np.concatenate([logits, logits[:1]]),
            "wrong class count": logits[:, :-1],
            "non-float dtype": np.argsort(logits, axis=1),
            "nan": np.where(np.arange(len(logits))[:, None] == espresso[0], np.nan, logits),
            "inf": np.where(np.arange(len(logits))[:, None] == espresso[0], np.inf, logits),
        }
        if self.fault == "exception":
            raise RuntimeError("the model failed on an espresso")
        if self.fault == "escape":
            raise _Escape("out of the batcher's loop")
        return wrong[self.fault]  # type: ignore[return-value]

    def close(self) -> None:
        """The real backend is shared by the module's tests: keep it open."""


@pytest.fixture(scope="module")
def real_model() -> Iterator[LoadedModel]:
    """The embedded model on the default backend, as `make run` serves it."""
    model = load_configured_model(make_settings())
    assert model.backend.name == "onnxruntime"
    yield model
    model.backend.close()


def _serve(model: LoadedModel, backend: EspressoAllergy) -> TestClient:
    loaded = LoadedModel(spec=model.spec, backend=backend)
    app = create_app(make_settings(), model_loader=lambda: loaded, configure_logging=False)
    return TestClient(app)


def _coffee() -> bytes:
    return COFFEE_PNG.read_bytes()


def _one_batch(client: TestClient, backend: EspressoAllergy) -> tuple[httpx.Response, ...]:
    """Send a cat (held in the model), then a cat and a coffee that queue behind it and
    run together in the next batch; return the three answers."""
    host = client.app.state.registry.resolve()  # type: ignore[attr-defined]
    answers: dict[str, httpx.Response] = {}

    def send(key: str, body: bytes, headers: dict[str, str]) -> None:
        answers[key] = client.post("/predict", content=body, headers=headers)

    backend.gate.clear()
    backend.entered.clear()
    threads = [threading.Thread(target=send, args=("held", cat_jpeg(), JPEG))]
    threads[0].start()
    wait_until(backend.entered.is_set, what="the first cat in the model")
    for key, body, headers in (("cat", cat_jpeg(), JPEG), ("coffee", _coffee(), PNG)):
        threads.append(threading.Thread(target=send, args=(key, body, headers)))
        threads[-1].start()
    wait_until(lambda: host.batcher.pending == 3, what="a cat and a coffee queued")
    backend.gate.set()
    for thread in threads:
        thread.join(timeout=60)
    return answers["held"], answers["cat"], answers["coffee"]


def _top_class(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["predictions"][0]["class_id"])


@pytest.mark.parametrize(
    "fault",
    ["fewer rows", "more rows", "wrong class count", "non-float dtype", "nan", "inf",
     "exception", "escape"],
)  # fmt: skip
def test_a_misbehaving_model_fails_only_the_requests_it_failed(
    real_model: LoadedModel, fault: str
) -> None:
    backend = EspressoAllergy(real_model.backend, fault)
    with _serve(real_model, backend) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, what="ready")
        held, cat, coffee = _one_batch(client, backend)
        assert _top_class(held) in CAT_CLASSES
        assert coffee.status_code == 500
        assert coffee.json()["type"] == "urn:inference-gateway:problem:inference-failed"
        if fault == "escape":  # the whole pass broke out of the loop: its batch failed
            assert cat.status_code == 500
        else:
            assert _top_class(cat) in CAT_CLASSES
        # The server goes on: the next request is answered, and it is still ready.
        assert _top_class(client.post("/predict", content=cat_jpeg(), headers=JPEG)) in (
            CAT_CLASSES
        )
        assert client.get("/ready").status_code == 200
        assert client.get("/health").status_code == 200
        samples = scrape.parse(client.get("/metrics").text)
        model = "efficientnet-lite0"
        failures = scrape.total(
            samples, "model_inference_errors_total", model_name=model, model_version="1"
        )
        crashes = scrape.value(
            samples, "batcher_crashes_total", model_name=model, model_version="1"
        )
        assert (failures, crashes) == ((0, 1) if fault == "escape" else (1, 0))


def test_a_model_whose_worker_cannot_recover_takes_the_process_out(
    real_model: LoadedModel,
) -> None:
    """After crash upon crash, predictions, /ready and /health answer 503 model-failed,
    so the orchestrator stops routing to the process and restarts it."""
    backend = EspressoAllergy(real_model.backend, "escape")
    with _serve(real_model, backend) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, what="ready")
        for _ in range(MAX_CONSECUTIVE_CRASHES):
            assert client.post("/predict", content=_coffee(), headers=PNG).status_code == 500
        for path in ("/ready", "/health"):
            answer = client.get(path)
            assert answer.status_code == 503
            assert answer.json()["reason"] == "model_failed"
            assert "crashed 5 times in a row" in answer.json()["detail"]
        refused = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert refused.status_code == 503 and refused.json()["reason"] == "model_failed"


def test_a_model_that_fails_to_load_is_retried_and_ready_says_why(
    real_model: LoadedModel,
) -> None:
    attempts: list[int] = []
    release = threading.Event()

    def flaky_load() -> LoadedModel:
        attempts.append(1)
        if len(attempts) <= 2:
            raise FileNotFoundError("model.onnx is not there yet")
        release.wait(timeout=30)
        return LoadedModel(real_model.spec, EspressoAllergy(real_model.backend, None))

    settings = make_settings(model_load_retry_seconds=0.05, model_load_retry_max_seconds=0.1)
    app = create_app(settings, model_loader=flaky_load, configure_logging=False)
    with TestClient(app) as client:
        wait_until(lambda: len(attempts) >= 3, what="a third attempt")
        samples = scrape.parse(client.get("/metrics").text)
        assert (
            scrape.value(
                samples,
                "model_load_failures_total",
                model_name="efficientnet-lite0",
                model_version="1",
            )
            == 2
        )
        # While the third attempt runs, /ready still tells why the last one failed.
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "not_ready"
        reason = "FileNotFoundError: model.onnx is not there yet (2 failed attempt(s)"
        assert reason in ready.json()["detail"]
        (model,) = ready.json()["models"]
        assert model["state"] == "UNAVAILABLE" and reason in model["reason"]
        assert client.get("/health").status_code == 200
        release.set()
        wait_until(lambda: client.get("/ready").status_code == 200, what="ready after retrying")
        assert _top_class(client.post("/predict", content=cat_jpeg(), headers=JPEG)) in (
            CAT_CLASSES
        )
