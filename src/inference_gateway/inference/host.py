"""The model's life in the server: load and warm up off the loop, then classify.

`ModelHost` owns the preprocessing thread pool and the single inference thread, so
the event loop never runs CPU work. It times each stage once; that one measurement
feeds the metric, the span and the response's ``timings_ms``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from inference_gateway.errors import (
    InferenceTimeoutException,
    InvalidImageException,
    ModelInferenceException,
    ModelNotLoadedException,
    QueueFullException,
)
from inference_gateway.inference.model import LoadedModel, ModelLoader
from inference_gateway.inference.postprocess import Prediction, top_k
from inference_gateway.inference.preprocess import (
    ImageInfo,
    ImageLimits,
    PreparedImage,
    prepare_image,
)
from inference_gateway.observability.logging import log_error, log_inference_complete
from inference_gateway.observability.telemetry import Telemetry
from inference_gateway.observability.tracing import TracedOperation, get_current_trace_id

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds spent in each stage of one prediction."""

    preprocess_ms: float
    queue_ms: float
    inference_ms: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The answer to one image: ranked predictions, image facts and stage timings."""

    predictions: list[Prediction]
    image: ImageInfo
    timings: Timings


@dataclass(frozen=True, slots=True)
class _ForwardResult:
    logits: npt.NDArray[np.float32]
    queue_seconds: float
    compute_seconds: float
    started_ns: int  # wall clock, for the spans
    ended_ns: int


class ModelHost:
    """Loads one model in the background and serves classifications once it is warm."""

    def __init__(
        self,
        loader: ModelLoader,
        telemetry: Telemetry,
        *,
        model_name: str,
        limits: ImageLimits,
        preprocess_workers: int,
        max_queue_size: int,
        warmup: bool = True,
    ) -> None:
        """Prepare the executors; nothing is loaded until `start`."""
        self._loader = loader
        self._telemetry = telemetry
        self.model_name = model_name
        self._limits = limits
        self._max_queue_size = max_queue_size
        self._warmup = warmup
        self._preprocess_pool = ThreadPoolExecutor(preprocess_workers, "preprocess")
        self._inference_pool = ThreadPoolExecutor(1, "inference")
        self._pending = 0
        self.model: LoadedModel | None = None
        self.ready = False
        self.draining = False

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Load and warm the model on the inference thread; readiness follows success."""
        metrics = self._telemetry.metrics
        try:
            model = await self._run(self._inference_pool, self._load_and_warm)
        except Exception as exc:
            log_error(
                self._telemetry.logger, "Model failed to load", exc, model_name=self.model_name
            )
            raise
        self.model = model
        self.ready = True
        if metrics is not None:
            metrics.set_model_state(self.model_name, loaded=True, memory_bytes=model.memory_bytes)
        self._telemetry.logger.info(
            "Model ready",
            model_name=model.spec.name,
            model_version=model.spec.version,
            backend=model.backend.name,
            memory_bytes=model.memory_bytes,
        )

    def _load_and_warm(self) -> LoadedModel:
        started = time.perf_counter()
        model = self._loader()
        if self._warmup:
            crop = model.spec.preprocess.crop
            model.backend.predict(np.zeros((1, 3, crop, crop), dtype=np.float32))
        self._telemetry.logger.info(
            "Model loaded",
            model_name=model.spec.name,
            load_seconds=round(time.perf_counter() - started, 3),
        )
        return model

    async def close(self) -> None:
        """Stop accepting work, let running work finish, release the model."""
        self.ready = False
        self.draining = True
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._inference_pool.shutdown, True, cancel_futures=True)
        if self.model is not None:
            self.model.backend.close()
            self.model = None
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.set_model_state(self.model_name, loaded=False)

    # --- serving --------------------------------------------------------------------
    def require_ready(self) -> LoadedModel:
        """The loaded model, or `ModelNotLoadedException` while loading or draining."""
        if self.draining:
            raise ModelNotLoadedException("The service is shutting down.")
        if not self.ready or self.model is None:
            raise ModelNotLoadedException("The model is still loading; retry shortly.")
        return self.model

    async def classify(self, data: bytes, k: int, deadline: float) -> Classification:
        """Preprocess, run and rank one image; ``deadline`` is a `time.monotonic` value."""
        model = self.require_ready()
        tracer = self._telemetry.tracer
        metrics = self._telemetry.metrics
        with TracedOperation("preprocess_image", {"image.bytes": len(data)}, tracer=tracer) as span:
            started = time.perf_counter()
            try:
                prepared = await self._run(
                    self._preprocess_pool, prepare_image, data, self._limits, model.spec.preprocess
                )
            except InvalidImageException as exc:
                if metrics is not None:
                    metrics.record_decode_failure(exc.reason)
                raise
            preprocess_seconds = time.perf_counter() - started
            info = prepared.info
            span.set_attributes(
                {
                    "image.format": info.format,
                    "image.width": info.width,
                    "image.height": info.height,
                }
            )
        if metrics is not None:
            metrics.record_image(info.size_bytes, info.width, info.height, preprocess_seconds)

        with TracedOperation(
            "model_inference",
            {"model.name": model.spec.name, "model.version": model.spec.version, "batch.size": 1},
            tracer=tracer,
        ) as span:
            result = await self._forward(model, prepared, deadline)
            predictions = top_k(result.logits[0], model.spec.labels, k)
            best = predictions[0]
            span.set_attributes(
                {"prediction.class": best.label, "prediction.confidence": best.confidence}
            )
        if metrics is not None:
            metrics.record_prediction(model.spec.name, best.label, best.confidence)
        log_inference_complete(
            self._telemetry.logger, model.spec.name, best.label, best.confidence,
            result.compute_seconds * 1000,
        )  # fmt: skip
        return Classification(
            predictions=predictions,
            image=info,
            timings=Timings(
                preprocess_ms=preprocess_seconds * 1000,
                queue_ms=result.queue_seconds * 1000,
                inference_ms=result.compute_seconds * 1000,
            ),
        )

    async def _forward(
        self, model: LoadedModel, prepared: PreparedImage, deadline: float
    ) -> _ForwardResult:
        metrics = self._telemetry.metrics
        if self._pending >= self._max_queue_size:
            raise QueueFullException(
                f"{self._pending} requests are waiting for the model; retry shortly."
            )
        submitted = time.perf_counter()
        submitted_ns = time.time_ns()
        trace_id = get_current_trace_id()

        def run() -> _ForwardResult:
            begin, begin_ns = time.perf_counter(), time.time_ns()
            logits = model.backend.predict(prepared.tensor[np.newaxis])
            end = time.perf_counter()
            return _ForwardResult(logits, begin - submitted, end - begin, begin_ns, time.time_ns())

        self._pending += 1
        self._publish_queue()
        future: Future[_ForwardResult] = self._inference_pool.submit(run)
        try:
            remaining = deadline - time.monotonic()
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(remaining, 0))
        except TimeoutError:
            future.cancel()  # not computed if it had not started yet
            raise InferenceTimeoutException(
                "The prediction did not finish before the deadline."
            ) from None
        except Exception as exc:
            if metrics is not None:
                metrics.record_inference_error(model.spec.name, type(exc).__name__)
            raise ModelInferenceException("The model failed on this input.") from exc
        finally:
            self._pending -= 1
            self._publish_queue()
        # The worker thread measured both phases; they become spans after the fact.
        tracer = self._telemetry.tracer
        tracer.start_span("queue_wait", start_time=submitted_ns).end(end_time=result.started_ns)
        tracer.start_span(
            "forward_pass", start_time=result.started_ns, attributes={"batch.size": 1}
        ).end(end_time=result.ended_ns)
        if metrics is not None:
            metrics.record_queue_wait(model.spec.name, result.queue_seconds)
            metrics.record_inference(model.spec.name, result.compute_seconds, 1, trace_id)
        return result

    def _publish_queue(self) -> None:
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.set_queue_size(self.model_name, self._pending)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` in ``pool`` with the caller's contextvars (log context, span)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, context.run, fn, *args)
