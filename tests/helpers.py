"""Test helpers: settings, waiting on conditions, real and controllable models."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import LoadedModel, ModelSpec, load_model
from inference_gateway.observability.logging import setup_logging
from tests.images import cat_jpeg


def make_settings(**overrides: object) -> Settings:
    """Settings for a test: no .env file, JSON logs, no OTLP export."""
    base: dict[str, object] = {
        "_env_file": None,
        "environment": "production",
        "log_format": "json",
        "otel_exporter_otlp_endpoint": None,
        "otel_exporter_otlp_traces_endpoint": None,
        "prometheus_multiproc_dir": None,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def wait_until(
    condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def json_log_capture(level: str = "INFO") -> Iterator[io.StringIO]:
    """Route all logging to a buffer as JSON lines at ``level``; restore defaults after."""
    stream = io.StringIO()
    setup_logging(level, "json", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


def real_loader() -> LoadedModel:
    """The embedded EfficientNet-Lite0 on the torch backend."""
    return load_model("efficientnet-lite0", "1", "torch", "cpu", 0)


class ControlledBackend:
    """A backend whose forward pass blocks until the test releases it.

    It returns deterministic logits: class ``argmax`` = the batch index modulo 1000,
    so tests can tell answers apart.
    """

    name = "controlled"

    def __init__(self, *, blocked: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        if not blocked:
            self.release.set()
        self.calls = 0
        self.fail_with: BaseException | None = None

    @property
    def memory_bytes(self) -> int:
        return 1234

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(timeout=60):
            raise RuntimeError("test never released the backend")
        if self.fail_with is not None:
            raise self.fail_with
        logits = np.zeros((batch.shape[0], 1000), dtype=np.float32)
        logits[:, 1] = 5.0
        return logits

    def close(self) -> None:
        self.release.set()


def controlled_loader(backend: ControlledBackend) -> Callable[[], LoadedModel]:
    """A loader that serves ``backend`` under the embedded model's spec."""

    def load() -> LoadedModel:
        spec = ModelSpec(name="efficientnet-lite0", version="1", labels=imagenet_labels())
        return LoadedModel(spec=spec, backend=backend)

    return load


def ready_client(client: TestClient) -> TestClient:
    """Wait until the app behind ``client`` reports ready."""
    wait_until(lambda: client.get("/ready").status_code == 200, what="/ready to return 200")
    return client


def controlled_app(backend: ControlledBackend, **settings: object) -> FastAPI:
    """An app serving ``backend``, with test settings and the caller's logging."""
    return create_app(
        make_settings(**settings), model_loader=controlled_loader(backend), configure_logging=False
    )


@contextmanager
def held_prediction(
    client: TestClient, backend: ControlledBackend, count: int = 1
) -> Iterator[list[int]]:
    """Send ``count`` predictions on threads; yield once all are in the batcher.

    The backend must be blocked: the first request is then in the running batch and
    the others wait in the queue. On exit the backend is released and the threads
    joined; the yielded list then holds their status codes.
    """
    statuses: list[int] = []
    host = client.app.state.host  # type: ignore[attr-defined]

    def send() -> None:
        response = client.post(
            "/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
        )
        statuses.append(response.status_code)

    backend.entered.clear()
    threads = [threading.Thread(target=send) for _ in range(count)]
    try:
        # One at a time, so the first is in the model before the next one queues.
        for n, thread in enumerate(threads, start=1):
            thread.start()
            wait_until(
                lambda n=n: host.batcher.pending == n, what=f"{n} predictions in the batcher"
            )
            wait_until(backend.entered.is_set, what="a prediction to reach the model")
        yield statuses
    finally:
        backend.release.set()
        for thread in threads:
            thread.join(timeout=30)
