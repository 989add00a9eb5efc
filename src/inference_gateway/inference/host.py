"""The model's life in the server: load and warm up off the loop, then classify.

`ModelHost` owns the `Batcher` (whose worker thread runs the forward passes) and the
decoding: on a thread pool when the worker has several cores, or on the event loop
itself when it has one (the default layout on a small machine: one worker process
per core), where a pool thread on the same core would only add hand-offs; large
images always go to a thread. A model that fails to load is tried again with
backoff, and readiness says why. Each stage is timed once; that one measurement
feeds the metric, the span and the response's ``timings_ms``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from opentelemetry import trace

from golden_signals.sampling import want_trace
from golden_signals.tracing import TracedOperation, get_current_trace_id
from inference_gateway.errors import (
    InvalidImageException,
    InvalidInputException,
    ModelFailedException,
    ModelNotLoadedException,
    ModelStalledException,
    NonFiniteScoresException,
    ServiceDrainingException,
)
from inference_gateway.inference.batcher import Batcher, BatchOutcome
from inference_gateway.inference.heap import freeze_long_lived
from inference_gateway.inference.model import LoadedModel, ModelLoader
from inference_gateway.inference.postprocess import Prediction, activate, rank
from inference_gateway.inference.preprocess import (
    ImageInfo,
    ImageLimits,
    open_image,
    prepare_image,
    prepare_opened,
    quick_to_decode,
)
from inference_gateway.inference.quality import (
    ImageProbe,
    Observation,
    Reference,
    measure,
    observe,
)
from inference_gateway.inference.signal_batch import SignalBatch
from inference_gateway.observability.logging import log_error, log_inference_start
from inference_gateway.observability.telemetry import Telemetry

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
    batch_size: int
    quality: Quality | None = None  # None: the version has no reference


@dataclass(frozen=True, slots=True)
class Quality:
    """One answer against its version's reference: what its model-quality signals are
    measured from. The signals themselves are measured with other answers' a little
    later (`SignalBatch`), or now by `observed` for a client that asks for them."""

    reference: Reference
    confidences: npt.NDArray[np.float64]
    labels: Sequence[str]
    confidence: float  # top-1
    probe: ImageProbe | None = None  # None: an answer to a client's tensor

    @property
    def unusual(self) -> bool:
        """Top-1 confidence below the reference's 5th percentile (trace kept as
        ``low_confidence``)."""
        return self.confidence < self.reference.low_confidence

    def observed(self) -> Observation:
        """Every signal of this answer, measured now."""
        image = None if self.probe is None else measure([self.probe])[0]
        return observe(self.confidences, self.labels, image)


def _kept_trace_id(kept: bool | None) -> str | None:
    """The current trace's id when its trace is kept (tail sampling said so, or, under
    head sampling, it is sampled): what an exemplar may link to."""
    if kept is None:
        kept = trace.get_current_span().get_span_context().trace_flags.sampled
    return get_current_trace_id() if kept else None


@dataclass(frozen=True, slots=True)
class Scored:
    """One image's answer before ranking: the confidence of every class."""

    confidences: npt.NDArray[np.float64]
    labels: tuple[str, ...]
    image: ImageInfo | None  # None when the client sent a preprocessed tensor
    timings: Timings
    batch_size: int
    quality: Quality | None = None  # None: the version has no reference


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How the batcher groups requests (see `Batcher`)."""

    max_batch_size: int = 4
    max_batch_delay_seconds: float = 0.0
    max_queue_size: int = 64
    max_queue_wait_seconds: float = 0.0  # 0: no bound but the size and the deadline


@dataclass(frozen=True, slots=True)
class LoadRetry:
    """How a failed load is retried: after ``first_seconds``, doubling up to ``max_seconds``."""

    first_seconds: float = 1.0
    max_seconds: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt in a row."""
        return float(min(self.first_seconds * 2 ** min(failures - 1, 32), self.max_seconds))


class ModelState(StrEnum):
    """Where a model version is in its life, as `GET /models` reports it."""

    LOADING = "LOADING"  # the first attempt to load it is running
    READY = "READY"  # serving
    UNAVAILABLE = "UNAVAILABLE"  # it failed (to load, or while serving); see the reason
    UNLOADING = "UNLOADING"  # taken out of service; finishing what it admitted


def _close_abandoned(loading: asyncio.Future[LoadedModel]) -> None:
    """Release the model of a load nobody waits for any more (a failure is moot)."""
    if not loading.cancelled() and loading.exception() is None:
        loading.result().backend.close()


class ModelHost:
    """One version of one model: loads it in the background, then serves it.

    Each host has its own batcher, queue and admission estimate, so a slow model does
    not stall a fast one and one model's full queue refuses only its own requests. The
    decoding pool is shared by all hosts (`ModelRegistry` owns it).
    """

    def __init__(
        self,
        loader: ModelLoader,
        telemetry: Telemetry,
        *,
        model_name: str,
        model_version: str,
        limits: ImageLimits,
        pool: ThreadPoolExecutor,
        decode_on_loop: bool,
        batching: BatchingConfig,
        warmup: bool = True,
        stall_seconds: float = 10.0,
        load_retry: LoadRetry | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        """Remember how to load and serve; nothing is loaded until `start`.

        ``pool``: where images are decoded; ``decode_on_loop``: decode small images on
        the event loop instead (a worker with one core). ``stall_seconds``: a forward
        pass running longer than this makes `check_ready` fail, so orchestrators stop
        routing to a stuck model.
        """
        self._loader = loader
        self._telemetry = telemetry
        self.model_name = model_name
        self.model_version = model_version
        self.key = (model_name, model_version)  # its metric labels
        self._limits = limits
        self.batching = batching
        self._warmup = warmup
        self.stall_seconds = stall_seconds
        self._load_retry = load_retry or LoadRetry()
        # What a client may read of a load failure: without the server's paths.
        self._redact = redact
        self.load_failures = 0  # failed load attempts in a row (0 once loaded)
        self.load_error: str | None = None  # why the last attempt failed
        self.permanent_error = False  # the last failure will not fix itself by retrying
        self._next_attempt: float | None = None  # monotonic time of the next attempt
        self._decode_on_loop = decode_on_loop
        self._preprocess_pool = pool
        self.model: LoadedModel | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self.retiring = False  # out of the routing table; finishing its leases
        self.closed = False  # closed: whatever it was loading is dropped
        self.leases = 0  # requests routed here and not finished (event loop only)
        self.released = asyncio.Event()  # set when the leases fall to 0
        self._admitted = 0  # requests between admission and answer (event loop only)
        # Set when its first load attempt is over (it serves, or failed once), or it closed.
        self.attempted = asyncio.Event()
        # Answers whose model-quality signals are measured together, a little later.
        self.signals = SignalBatch(self._record_signals)

    # --- lifecycle ----------------------------------------------------------------
    @property
    def state(self) -> ModelState:
        """LOADING, READY, UNAVAILABLE or UNLOADING."""
        if self.retiring or self.draining:
            return ModelState.UNLOADING
        if self.batcher is not None and not self.batcher.alive:
            return ModelState.UNAVAILABLE
        if self.ready:
            return ModelState.READY
        return ModelState.UNAVAILABLE if self.load_error is not None else ModelState.LOADING

    @property
    def reason(self) -> str | None:
        """Why the version is not serving, when it is not."""
        if self.batcher is not None and not self.batcher.alive:
            return self.batcher.failure or "its worker died"
        if self.ready or self.load_error is None:
            return None
        if self.permanent_error or self._next_attempt is None:
            return self.load_error
        wait = self._next_attempt - time.monotonic()
        when = f"next attempt in {wait:.0f} s" if wait > 0 else "trying again now"
        return f"{self.load_error} ({self.load_failures} failed attempt(s); {when})"

    async def start(self) -> bool:
        """Load and warm the model off the loop, start the batcher, report ready.

        A failed attempt is logged (ERROR, with its traceback), counted
        (``model_load_failures_total``) and shown by `reason`; the next one follows
        after a backoff, until one succeeds or the task is cancelled. A ``ValueError``
        (a model that is wrong as configured, such as a label count that is not the
        graph's) is not retried: the files must change first. Returns whether the
        model is serving.
        """
        model = await self._load_with_retries()
        if model is None:
            return False
        if self.closed:  # closed while it loaded: never serve
            model.backend.close()
            return False
        self.model = model
        self.batcher = Batcher(
            model.backend,
            self._telemetry,
            model_name=self.model_name,
            model_version=self.model_version,
            max_batch_size=self.batching.max_batch_size,
            max_batch_delay_seconds=self.batching.max_batch_delay_seconds,
            max_queue_size=self.batching.max_queue_size,
            max_queue_wait_seconds=self.batching.max_queue_wait_seconds,
            num_classes=len(model.spec.labels),
        )
        self.batcher.muted = self.retiring
        if model.reference_error is not None:
            self._telemetry.logger.warning(
                "Model quality signals off",
                model_name=self.model_name,
                model_version=self.model_version,
                reason=model.reference_error,
            )
        self.batcher.start()
        freeze_long_lived()  # the model and its runtime: out of the collector's walks
        self.ready = True
        self.attempted.set()
        self._telemetry.logger.info(
            "Model ready",
            model_name=self.model_name,
            model_version=self.model_version,
            backend=model.backend.name,
            memory_bytes=model.memory_bytes,
        )
        return True

    def publish_reference(self) -> None:
        """Turn the version's model-quality series to this host's reference (or off):
        called by the registry when this host becomes the one serving the version, not
        when it loads, so a replacement still warming never changes what the serving
        host's answers are counted into."""
        metrics = self._telemetry.metrics
        model = self.model
        if metrics is None or model is None:
            return
        reference = model.reference
        if reference is None:
            metrics.set_quality_reference(self.key, None)
            return
        metrics.set_quality_reference(
            self.key,
            reference.fractions,
            sha256=reference.sha256,
            images=reference.images,
            confidence_mean=reference.confidence_mean,
            confidence_stddev=reference.confidence_stddev,
        )

    async def _load_with_retries(self) -> LoadedModel | None:
        metrics = self._telemetry.metrics
        while not self.closed:
            started = time.perf_counter()
            loading = asyncio.ensure_future(asyncio.to_thread(self._load_and_warm))
            try:
                model = await asyncio.shield(loading)
            except asyncio.CancelledError:
                # Abandoned (the version was removed or replaced): the thread goes on,
                # and the model it returns is released rather than left to the collector.
                loading.add_done_callback(_close_abandoned)
                raise
            except Exception as exc:
                if self.closed:
                    return None
                self.load_failures += 1
                self.load_error = self._redact(f"{type(exc).__name__}: {exc}")[:500]
                self.permanent_error = isinstance(exc, ValueError)
                delay = None if self.permanent_error else self._load_retry.delay(self.load_failures)
                self._next_attempt = None if delay is None else time.monotonic() + delay
                self.attempted.set()
                if metrics is not None:
                    metrics.record_model_load_failure(self.key)
                log_error(
                    self._telemetry.logger, "Model failed to load", exc,
                    model_name=self.model_name, model_version=self.model_version,
                    attempt=self.load_failures, retry_in_seconds=delay,
                )  # fmt: skip
                if delay is None:
                    return None
                await asyncio.sleep(delay)
                continue
            if metrics is not None:
                metrics.record_model_load(self.key, time.perf_counter() - started)
            self.load_failures = 0
            self.load_error = None
            self._next_attempt = None
            return model
        return None

    def _load_and_warm(self) -> LoadedModel:
        started = time.perf_counter()
        model = self._loader()
        try:
            if self._warmup:
                pre = model.spec.preprocess
                model.backend.predict(np.zeros((1, *pre.tensor_shape), dtype=pre.input_type))
        except BaseException:
            model.backend.close()
            raise
        if self.closed:  # nobody will serve it (the task waiting for it may be gone)
            model.backend.close()
            raise RuntimeError("the host was closed while it loaded")
        self._telemetry.logger.info(
            "Model loaded",
            model_name=self.model_name,
            model_version=self.model_version,
            load_seconds=round(time.perf_counter() - started, 3),
        )
        return model

    def begin_drain(self) -> None:
        """Refuse new work from now on (``/ready`` and new predictions get 503)."""
        self.draining = True

    def retire(self) -> None:
        """Out of service but finishing its requests: another host may serve the same
        version now, so this one stops writing the version's gauges."""
        self.retiring = True
        self.signals.flush()  # counted against the reference they were answered with
        if self.batcher is not None:
            self.batcher.muted = True

    async def close(self, grace_seconds: float = 30.0) -> None:
        """Stop taking work, let queued work finish within the grace period, release.

        What it was still loading is dropped. The version's gauges are the registry's
        to publish (another host may serve the same version).
        """
        self.closed = True
        self.attempted.set()
        was_serving = self.ready
        self.ready = False
        self.draining = True
        if self.batcher is not None:
            await self.batcher.close(grace_seconds)
        self.signals.flush()
        if self.model is not None:
            self.model.backend.close()
            self.model = None
        if was_serving and self._telemetry.metrics is not None:
            self._telemetry.metrics.record_model_unload(self.key)

    # --- serving --------------------------------------------------------------------
    def require_ready(self) -> LoadedModel:
        """The loaded model, or a 503 while loading, draining or failed: the gate for
        new work."""
        if self.draining:
            raise ServiceDrainingException("The service is shutting down.")
        self.check_live()
        return self._loaded()

    def check_live(self) -> None:
        """Raise `ModelFailedException` once the model's worker has given up for good:
        the process cannot serve it again, and only a restart helps."""
        batcher = self.batcher
        if batcher is not None and not batcher.alive:
            raise ModelFailedException(
                f"Model {self.model_name} version {self.model_version} stopped serving: "
                f"{batcher.failure or 'its worker died'}."
            )

    def _loaded(self) -> LoadedModel:
        if not self.ready or self.model is None:
            reason = self.reason
            if reason is not None:
                raise ModelNotLoadedException(
                    f"Model {self.model_name} version {self.model_version} failed to load: "
                    f"{reason}."
                )
            raise ModelNotLoadedException(
                f"Model {self.model_name} version {self.model_version} is still loading; "
                "retry shortly."
            )
        return self.model

    def check_ready(self) -> LoadedModel:
        """`require_ready`, and a 503 while a forward pass has run over ``stall_seconds``."""
        model = self.require_ready()
        busy_since = self.batcher.busy_since if self.batcher is not None else None
        if busy_since is not None:
            running = time.monotonic() - busy_since
            if running > self.stall_seconds:
                raise ModelStalledException(
                    f"A forward pass of {self.model_name} version {self.model_version} has "
                    f"been running for {running:.0f} s."
                )
        return model

    def check_admission(self, deadline: float, *, arriving: bool = True) -> None:
        """Refuse now (503) a request the queue has no room or no time for.

        Called before the body is read (``arriving``: the queue's work ahead is bounded
        by ``MAX_QUEUE_WAIT_MS`` too) and again for each image before decoding (the
        request's own images are not refused for the time they add to each other):
        under overload the CPU goes to requests that will be answered, not to reading
        and decoding images a full queue would refuse anyway. Requests being decoded
        count as queued.
        """
        batcher = self.batcher
        if batcher is not None:
            decoding = max(self._admitted - batcher.pending, 0)
            batcher.check_admission(deadline, ahead_unqueued=decoding, arriving=arriving)

    async def classify(self, data: bytes, k: int, deadline: float) -> Classification:
        """Preprocess, run and rank one image; ``deadline`` is a `time.monotonic` value.

        A request admitted before draining began still completes: only `require_ready`
        (called by the route on arrival) refuses new work while draining.
        """
        scored = await self.score_image(data, deadline)
        assert scored.image is not None  # noqa: S101 - an image was decoded
        return Classification(
            predictions=rank(scored.confidences, scored.labels, k),
            image=scored.image,
            timings=scored.timings,
            batch_size=scored.batch_size,
            quality=scored.quality,
        )

    async def score_image(self, data: bytes, deadline: float) -> Scored:
        """Decode and preprocess one encoded image with the model's own configuration,
        run it, and return the confidence of every class."""
        model, batcher = self._admit(deadline)
        self._admitted += 1
        try:
            tensor, info, preprocess_seconds = await self._preprocess(model, data)
            return await self._infer(model, batcher, tensor, deadline, info, preprocess_seconds)
        finally:
            self._admitted -= 1

    async def score_tensor(self, tensor: npt.NDArray[np.float32], deadline: float) -> Scored:
        """Run one image the client preprocessed itself (the model's `tensor_shape`, as
        float32) and return the confidence of every class."""
        model, batcher = self._admit(deadline)
        self._admitted += 1
        try:
            return await self._infer(model, batcher, tensor, deadline, None, 0.0)
        except NonFiniteScoresException:
            # The model takes what its preprocessing makes; a tensor far outside that
            # range (say 3e38) overflows it: the input's fault, not the server's.
            largest = float(np.max(np.abs(tensor))) if tensor.size else 0.0
            raise InvalidInputException(
                "The model's scores for this tensor are not finite numbers: its values "
                f"(largest magnitude {largest:.3g}) are outside what the model can take."
            ) from None
        finally:
            self._admitted -= 1

    def _admit(self, deadline: float) -> tuple[LoadedModel, Batcher]:
        model = self._loaded()
        batcher = self.batcher
        assert batcher is not None  # noqa: S101 - set together with `ready`
        self.check_admission(deadline, arriving=False)
        return model, batcher

    async def _preprocess(
        self, model: LoadedModel, data: bytes
    ) -> tuple[npt.NDArray[np.float32], ImageInfo, float]:
        tracer = self._telemetry.tracer
        metrics = self._telemetry.metrics
        attributes = {"model.name": self.model_name, "model.version": self.model_version}
        with TracedOperation(
            "preprocess_image", {**attributes, "image.bytes": len(data)}, tracer=tracer
        ) as span:
            started = time.perf_counter()
            with_signals = model.reference is not None  # the quality signals need them
            try:
                if self._decode_on_loop:  # the header is read here once, then decoded
                    image = open_image(data, self._limits)
                    pool = None if quick_to_decode(image) else self._preprocess_pool
                    prepared = await self._run(
                        pool, prepare_opened, image, len(data), model.spec.preprocess, with_signals
                    )
                else:
                    prepared = await self._run(
                        self._preprocess_pool,
                        prepare_image,
                        data,
                        self._limits,
                        model.spec.preprocess,
                        with_signals,
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
        return prepared.tensor, info, preprocess_seconds

    async def _infer(
        self,
        model: LoadedModel,
        batcher: Batcher,
        tensor: npt.NDArray[np.float32],
        deadline: float,
        info: ImageInfo | None,
        preprocess_seconds: float,
    ) -> Scored:
        tracer = self._telemetry.tracer
        metrics = self._telemetry.metrics
        attributes = {"model.name": self.model_name, "model.version": self.model_version}
        with TracedOperation("model_inference", attributes, tracer=tracer) as span:
            log_inference_start(
                self._telemetry.logger, self.model_name, model_version=self.model_version
            )
            submitted_ns = time.time_ns()
            outcome = await batcher.submit(tensor, deadline)
            self._stage_spans(submitted_ns, outcome)
            confidences = activate(outcome.logits, model.spec.activation)
            best = int(np.argmax(confidences))
            label, confidence = model.spec.labels[best], float(confidences[best])
            quality = None
            if model.reference is not None:
                probe = None if info is None else info.probe
                quality = Quality(
                    model.reference, confidences, model.spec.labels, confidence, probe
                )
            exemplar = None
            if quality is not None and quality.unusual:
                span.set_attribute("prediction.low_confidence", True)
                exemplar = _kept_trace_id(want_trace("low_confidence"))
            span.set_attributes(
                {
                    "batch.size": outcome.batch_size,
                    "prediction.class": label,
                    "prediction.confidence": confidence,
                }
            )
        if metrics is not None:
            metrics.record_prediction(self.key, label, confidence, exemplar)
            if quality is not None:
                self.signals.add(quality)
        return Scored(
            confidences=confidences,
            labels=model.spec.labels,
            image=info,
            timings=Timings(
                preprocess_ms=preprocess_seconds * 1000,
                queue_ms=outcome.queue_seconds * 1000,
                inference_ms=outcome.compute_seconds * 1000,
            ),
            batch_size=outcome.batch_size,
            quality=quality,
        )

    def _record_signals(self, buckets: list[tuple[str, str]]) -> None:
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.record_quality(self.key, buckets)

    def _stage_spans(self, submitted_ns: int, outcome: BatchOutcome) -> None:
        """Turn the batcher's measured times into child spans of ``model_inference``."""
        tracer = self._telemetry.tracer
        tracer.start_span("queue_wait", start_time=submitted_ns).end(end_time=outcome.started_ns)
        links = [trace.Link(outcome.batch_span)] if outcome.batch_span is not None else None
        tracer.start_span(
            "forward_pass",
            start_time=outcome.started_ns,
            attributes={"batch.size": outcome.batch_size},
            links=links,
        ).end(end_time=outcome.ended_ns)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` in ``pool`` with the caller's contextvars (log context, span), or
        right here on the event loop without a pool."""
        if pool is None:
            return fn(*args)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, context.run, fn, *args)
