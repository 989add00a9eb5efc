"""Test helpers: settings, waiting on conditions, real and controllable models."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx2 as httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from golden_signals.logs import reset_logging
from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.inference.backends import Backend
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import LoadedModel, ModelSpec
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
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
        # Every request's trace is exported unless a test says otherwise (tail sampling
        # keeps 1% of the healthy ones by default); tests of the sampling set it.
        "trace_sample_ratio": 1.0,
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


async def wait_until_async(
    condition: Callable[[], bool], seconds: float = 30.0, what: str = "condition"
) -> None:
    """`wait_until` for a test running on an event loop: polls without blocking it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


@contextmanager
def json_log_capture(level: str = "INFO") -> Iterator[io.StringIO]:
    """Route all logging to a buffer as JSON lines at ``level``; restore defaults after."""
    stream = io.StringIO()
    setup_logging(level, "json", stream=stream)
    try:
        yield stream
    finally:
        reset_logging()


def real_app(**settings: object) -> FastAPI:
    """An app serving the real model on the default backend, as users run it.

    That is ONNX Runtime over the model exported to ``MODEL_CACHE_DIR`` (the session's
    cache: the export runs once per test session).
    """
    return create_app(make_settings(**settings), configure_logging=False)


#: How many classes the embedded model (and so `ControlledBackend`) scores.
NUM_CLASSES = 1000


class ControlledBackend:
    """A backend whose forward pass blocks until the test releases it.

    Without ``model`` its logits are deterministic and depend on each input alone: a
    row's top class is `top_class` of that row, so a request knows the answer it must
    get (`controlled_class` of its image), and a request handed another's row gets a
    wrong one. With ``model`` (a real backend) the logits are that model's: the test
    controls when the real model runs. ``batch_sizes`` records every forward pass.
    """

    name = "controlled"

    def __init__(self, *, blocked: bool = False, model: Backend | None = None) -> None:
        self.model = model
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()  # set by `close`: whoever held it let it go
        if not blocked:
            self.release.set()
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.fail_with: BaseException | None = None

    @property
    def memory_bytes(self) -> int:
        return self.model.memory_bytes if self.model is not None else 1234

    @staticmethod
    def top_class(row: npt.NDArray[np.float32]) -> int:
        """The class this backend ranks first for one preprocessed ``(3, H, W)`` image.

        A weighted sum of its channel means: images of different colours get
        different classes.
        """
        channel_means = row.reshape(3, -1).mean(axis=1, dtype=np.float64)
        score = float(np.dot(channel_means, (1.0, 10.0, 100.0)))
        return int(np.floor(score * 10)) % NUM_CLASSES

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.batch_sizes.append(int(batch.shape[0]))
        self.entered.set()
        if not self.release.wait(timeout=60):
            raise RuntimeError("test never released the backend")
        if self.fail_with is not None:
            raise self.fail_with
        if self.model is not None:
            return self.model.predict(batch)
        logits = np.zeros((batch.shape[0], NUM_CLASSES), dtype=np.float32)
        for i, row in enumerate(batch):
            logits[i, self.top_class(row)] = 5.0
        return logits

    def close(self) -> None:
        self.release.set()
        if self.model is not None:
            self.model.close()
        self.closed.set()


def controlled_class(image: bytes) -> int:
    """The class `ControlledBackend` ranks first for ``image`` sent to the gateway."""
    return ControlledBackend.top_class(
        prepare_image(image, ImageLimits(), PreprocessConfig()).tensor
    )


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
    host = client.app.state.registry.resolve()  # type: ignore[attr-defined]

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


def held_batch(
    client: TestClient, backend: ControlledBackend, bodies: Sequence[bytes]
) -> list[httpx.Response]:
    """Send ``bodies`` as concurrent predictions that the model runs as two batches.

    The backend must be blocked. The first request is held alone in the model while
    the others queue behind it; then the backend is released, and the queued ones run
    together (as one batch when ``MAX_BATCH_SIZE`` allows). Returns the responses in
    the order of ``bodies``.
    """
    host = client.app.state.registry.resolve()  # type: ignore[attr-defined]
    responses: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        # The gateway tells the format from the bytes.
        responses[i] = client.post(
            "/predict", content=bodies[i], headers={"content-type": "application/octet-stream"}
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    backend.entered.clear()
    try:
        threads[0].start()
        wait_until(backend.entered.is_set, what="the first prediction to reach the model")
        for thread in threads[1:]:
            thread.start()
        wait_until(
            lambda: host.batcher.pending == len(bodies), what=f"{len(bodies)} in the batcher"
        )
    finally:
        backend.release.set()
        for thread in threads:
            thread.join(timeout=60)
    return [responses[i] for i in range(len(bodies))]
