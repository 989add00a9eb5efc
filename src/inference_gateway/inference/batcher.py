"""Dynamic batching: one worker thread, one forward pass for many requests.

`Batcher.submit` is called on the event loop; it refuses at once what the service
cannot finish (queue full, deadline that the current queue makes unreachable, shutting
down) and otherwise awaits its row of a batch. The worker thread takes the first
queued request, waits at most ``max_batch_delay`` for others (up to
``max_batch_size``), skips requests whose deadline passed or whose caller gave up,
runs one forward pass and resolves each caller's future on its loop. A failing batch
is retried one request at a time, so one poisonous input fails alone.

Whatever the backend returns is checked before it is used (`check_batch_output`: an
array of floating-point scores, one row per input, one column per class, finite), so
a model that misbehaves for some inputs costs only those requests. Anything else that
goes wrong in the worker's loop is logged with its traceback, counted, fails only the
batch it hit, and the loop starts again; after `MAX_CONSECUTIVE_CRASHES` crashes
without a batch served in between, the batcher gives up and reports it (`failure`),
so readiness turns 503. The batcher knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from opentelemetry import context as otel_context
from opentelemetry import trace

from golden_signals.tracing import TracedOperation, set_span_error
from inference_gateway.errors import (
    DeadlineUnreachableException,
    InferenceTimeoutException,
    ModelFailedException,
    ModelInferenceException,
    NonFiniteScoresException,
    QueueFullException,
    ServiceDrainingException,
)
from inference_gateway.inference.backends import Backend
from inference_gateway.inference.batch_time import BatchTimes
from inference_gateway.observability.logging import log_error
from inference_gateway.observability.telemetry import Telemetry

#: Crashes of the worker's loop in a row, with no batch served between them, after
#: which the batcher stops and reports itself failed.
MAX_CONSECUTIVE_CRASHES = 5


class ModelOutputError(Exception):
    """A backend's answer to a batch breaks the contract: not an array of float scores
    with one row per input and one column per class."""


def check_batch_output(output: object, rows: int, classes: int | None) -> npt.NDArray[np.float32]:
    """The backend's ``output`` for a batch of ``rows`` inputs as float32 scores.

    Raises `ModelOutputError` unless it is a floating-point array of shape
    ``(rows, classes)`` (any class count when ``classes`` is None). Non-finite values
    are left for the caller to find per row: they condemn only their own input.
    """
    if not isinstance(output, np.ndarray):
        raise ModelOutputError(f"the model returned {type(output).__name__}, not an array")
    if output.dtype.kind != "f":
        raise ModelOutputError(f"the model returned {output.dtype} scores, not floating point")
    expected = f"({rows}, {classes if classes is not None else 'classes'})"
    if output.ndim != 2 or output.shape[0] != rows:
        raise ModelOutputError(
            f"the model returned shape {output.shape} for {rows} inputs; expected {expected}"
        )
    if classes is not None and output.shape[1] != classes:
        raise ModelOutputError(
            f"the model returned {output.shape[1]} scores per input for {classes} labels"
        )
    return output.astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One request's row of a batch, and how its time was spent."""

    logits: npt.NDArray[np.float32]
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    started_ns: int
    ended_ns: int
    batch_span: trace.SpanContext | None


@dataclass(eq=False, slots=True)
class _Job:
    tensor: npt.NDArray[np.float32]
    deadline: float  # time.monotonic()
    future: asyncio.Future[BatchOutcome]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    link: trace.Link | None = None
    abandoned: bool = False  # set on the loop when the caller stops waiting


#: A job and what it gets: its row of a batch, or the exception to raise.
_Settled = tuple[_Job, BatchOutcome | BaseException]


def _settle(job: _Job, outcome: BatchOutcome | BaseException) -> None:
    """Hand ``outcome`` to the job's future; runs on the job's loop."""
    if job.future.done():
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)


def _settle_all(settled: list[_Settled]) -> None:
    for job, outcome in settled:
        _settle(job, outcome)


def _resolve_all(settled: list[_Settled]) -> None:
    """Hand each job its outcome with one wake-up of each loop involved, not one per job
    (a cross-thread wake-up costs more than settling a future)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for job, outcome in settled:
        by_loop.setdefault(job.loop, []).append((job, outcome))
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_all, jobs)


def _too_late() -> InferenceTimeoutException:
    return InferenceTimeoutException("The prediction did not finish before the deadline.")


class Batcher:
    """Groups concurrent requests into batches for one backend."""

    def __init__(
        self,
        backend: Backend,
        telemetry: Telemetry,
        *,
        model_name: str,
        model_version: str,
        max_batch_size: int,
        max_batch_delay_seconds: float,
        max_queue_size: int,
        max_queue_wait_seconds: float = 0.0,
        num_classes: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Configure; `start` launches the worker thread.

        ``max_queue_wait_seconds``: refuse a request whose answer is estimated further
        away than this (0: no such bound); ``num_classes``: the number of scores each
        input must get (the model's label count); ``clock`` measures forward passes
        (tests pass one they control).
        """
        self._backend = backend
        self._telemetry = telemetry
        self.model_name = model_name
        self.model_version = model_version
        self._model = (model_name, model_version)  # its metric labels
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_seconds
        self.max_queue_size = max_queue_size
        self.max_queue_wait = max_queue_wait_seconds
        self.num_classes = num_classes
        self._clock = clock
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._in_flight = 0
        self._times = BatchTimes()  # recent forward passes: the admission estimate
        self.busy_since: float | None = None  # monotonic start of the running batch
        self.failure: str | None = None  # why the batcher stopped for good, if it did
        # Set when another batcher of the same version has taken over: this one stops
        # writing the version's gauges (counters it still adds to).
        self.muted = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    async def close(self, grace_seconds: float) -> None:
        """Refuse new work, let queued work finish for ``grace_seconds``, fail the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + grace_seconds
        await asyncio.to_thread(self._wait_drained, grace_seconds)
        with self._cond:
            leftovers = list(self._queue)
            self._queue.clear()
        message = "The service stopped before this request ran."
        _resolve_all([(job, ServiceDrainingException(message)) for job in leftovers])
        await asyncio.to_thread(self._thread.join, max(deadline - time.monotonic(), 0.1))
        self._publish()

    def expire(self) -> None:
        """The grace period is over: refuse new work and fail what still waits with 503
        ``draining``; the batch running now finishes and answers."""
        with self._cond:
            self._closing = True
            leftovers = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        message = "The service stopped before this request ran (its grace period ended)."
        _resolve_all([(job, ServiceDrainingException(message)) for job in leftovers])
        self._publish()

    def _wait_drained(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self.pending, timeout)

    # --- state --------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """False once the worker has given up (or its thread is gone)."""
        return self.failure is None and (self._thread.ident is None or self._thread.is_alive())

    @property
    def pending(self) -> int:
        """Requests queued or in the running batch."""
        return len(self._queue) + self._in_flight

    def estimated_wait(self, position: int) -> float:
        """Seconds until a request at queue ``position`` (1-based) has its answer.

        The batch running now, plus the batches that the queue ahead of it (its own
        included) makes — full ones, and its own with what is left — each at the
        duration fitted to the recent batches for its size (`BatchTimes`). 0 until a
        batch has been measured, and 0 when the batcher is idle: a request that would
        run at once is always admitted, so a stale estimate (one stuck batch) cannot
        lock admission out.
        """
        if not self._times.measured or (position <= 1 and not self._in_flight):
            return 0.0
        full, rest = divmod(position, self.max_batch_size)
        times = self._times
        return (
            times.seconds(self._in_flight)
            + full * times.seconds(self.max_batch_size)
            + times.seconds(rest)
        )

    def check_admission(
        self, deadline: float, ahead_unqueued: int = 0, *, arriving: bool = False
    ) -> None:
        """Refuse at once what this batcher could not finish in time, without queueing.

        ``ahead_unqueued``: requests admitted upstream (being decoded) that will queue
        before this one. ``arriving``: a request at the door (not yet one image of an
        admitted request). Raises `QueueFullException` when the queue plus those has no
        room, or, for a request arriving, holds a full batch and more work than
        ``max_queue_wait`` (a queue as long as the latency objective allows, not as long
        as memory allows: under overload the model stays busy and what it answers is
        answered in time; a request's own images never count against it), and
        `DeadlineUnreachableException` when the wait would outlast ``deadline``.
        """
        queued = len(self._queue) + ahead_unqueued
        if queued >= self.max_queue_size:
            raise QueueFullException(f"{queued} requests are waiting for the model.")
        wait = self.estimated_wait(queued + 1)
        left = deadline - time.monotonic()
        if wait > left:
            raise DeadlineUnreachableException(
                "The request's deadline has already passed."
                if left <= 0
                else f"The queue needs about {wait * 1000:.0f} ms, more than the request's "
                f"deadline allows ({left * 1000:.0f} ms)."
            )
        # Always room for a full batch waiting: the model is never starved, however
        # slow its batches are next to the bound.
        bounded = arriving and self.max_queue_wait and queued >= self.max_batch_size
        if bounded and wait > self.max_queue_wait:
            raise QueueFullException(
                f"{queued} requests are waiting for the model, about {wait * 1000:.0f} ms "
                f"of work; at most {self.max_queue_wait * 1000:.0f} ms is queued "
                "(MAX_QUEUE_WAIT_MS)."
            )

    # --- the loop side ----------------------------------------------------------------
    async def submit(self, tensor: npt.NDArray[np.float32], deadline: float) -> BatchOutcome:
        """Queue one image and wait for its logits, or refuse it at once.

        Raises `QueueFullException` or `DeadlineUnreachableException` without queueing,
        `ServiceDrainingException` while closing, `InferenceTimeoutException` when the
        deadline passes, `ModelInferenceException` when its forward pass fails.
        """
        loop = asyncio.get_running_loop()
        span_context = trace.get_current_span().get_span_context()
        job = _Job(
            tensor=tensor,
            deadline=deadline,
            future=loop.create_future(),
            loop=loop,
            link=trace.Link(span_context) if span_context.is_valid else None,
        )
        with self._cond:
            if self._closing:
                raise ServiceDrainingException("The service is shutting down.")
            if not self.alive:
                raise ModelFailedException(self._failure_detail())
            self.check_admission(deadline)
            self._queue.append(job)
            self._cond.notify_all()
        self._publish()
        try:
            remaining = max(deadline - time.monotonic(), 0.0)
            outcome = await asyncio.wait_for(asyncio.shield(job.future), remaining)
        except TimeoutError:
            raise _too_late() from None
        finally:
            if not job.future.done():  # timed out or cancelled (the client went away)
                job.abandoned = True  # if the worker already took it, it skips it
                job.future.cancel()
                with self._cond, contextlib.suppress(ValueError):
                    self._queue.remove(job)
                self._publish()
        if time.monotonic() > deadline:  # a busy loop saw the answer before the timeout
            raise _too_late()
        return outcome

    # --- the worker thread ------------------------------------------------------------
    def _run(self) -> None:
        """The worker: serve batches until closed, surviving anything one batch does."""
        consecutive = 0
        while True:
            batch: list[_Job] | None = None
            settled: list[_Settled] = []
            try:
                batch = self._collect()
                if batch is None:
                    return
                self._execute(batch, settled)
                consecutive = 0
            except BaseException as exc:  # the worker must outlive any failure
                consecutive += 1
                self._crashed(exc, batch or [], settled, consecutive)
                if consecutive >= MAX_CONSECUTIVE_CRASHES:
                    self._give_up(exc, consecutive)
                    return
            finally:
                if batch is not None:
                    with self._cond:
                        self._in_flight = 0
                        self.busy_since = None
                        self._cond.notify_all()  # wakes `close` waiting for the drain
                    self._publish()
                    # After the queue gauge: a caller never sees its answer before it.
                    _resolve_all(settled)

    def _crashed(
        self, exc: BaseException, batch: list[_Job], settled: list[_Settled], consecutive: int
    ) -> None:
        """Fail the batch's unanswered requests with 500, log and count the crash."""
        answered = {id(job) for job, _ in settled}
        for job in batch:
            if id(job) not in answered:
                failure = ModelInferenceException("The model's worker failed on this batch.")
                failure.__cause__ = exc
                settled.append((job, failure))
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.record_batcher_crash(self._model)
        log_error(
            self._telemetry.logger, "Batcher worker crashed; restarting", exc,
            model_name=self.model_name, model_version=self.model_version, batch_size=len(batch),
            consecutive_crashes=consecutive,
        )  # fmt: skip

    def _give_up(self, exc: BaseException, consecutive: int) -> None:
        """Stop for good: record why, and refuse everything still queued."""
        with self._cond:
            self.failure = (
                f"the model's worker crashed {consecutive} times in a row "
                f"({type(exc).__name__}: {exc})"[:300]
            )
            leftovers = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._telemetry.logger.critical(
            "Batcher worker stopped",
            model_name=self.model_name,
            model_version=self.model_version,
            reason=self.failure,
        )
        if self._telemetry.metrics is not None and not self.muted:  # it can no longer answer
            self._telemetry.metrics.model_loaded.labels(*self._model).set(0)
        self._publish()
        detail = self._failure_detail()
        _resolve_all([(job, ModelFailedException(detail)) for job in leftovers])

    def _failure_detail(self) -> str:
        return (
            f"Model {self.model_name} version {self.model_version} stopped serving: "
            f"{self.failure or 'its worker is gone'}."
        )

    def _collect(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            gather_until = self._queue[0].enqueued + self.max_batch_delay
            while len(self._queue) < self.max_batch_size and not self._closing:
                remaining = gather_until - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            size = min(self.max_batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            self._in_flight = size
            self.busy_since = time.monotonic()
        return batch

    def _execute(self, batch: list[_Job], settled: list[_Settled]) -> None:
        now = time.monotonic()
        live: list[_Job] = []
        for job in batch:
            if job.abandoned:
                continue  # the caller timed out or went away: do not compute
            if now >= job.deadline:
                settled.append(
                    (job, InferenceTimeoutException("The deadline passed while queued."))
                )
                continue
            live.append(job)
        if not live:
            return
        try:
            self._forward(live, settled)
        except Exception:
            if len(live) == 1:
                raise
            for job in live:  # retry alone: only the input that fails gets the 500
                self._forward([job], settled)

    def _forward(self, jobs: list[_Job], settled: list[_Settled]) -> None:
        """One forward pass for ``jobs``; adds their outcomes (a 500 on failure) to
        ``settled``."""
        metrics = self._telemetry.metrics
        tracer = self._telemetry.tracer
        links = [job.link for job in jobs if job.link is not None]
        picked = time.perf_counter()  # the end of each job's queue wait
        started, started_ns = self._clock(), time.time_ns()
        # The batch has no single parent: a root span linked to every request's span.
        with TracedOperation(
            "inference_batch",
            {
                "model.name": self.model_name,
                "model.version": self.model_version,
                "batch.size": len(jobs),
            },
            tracer=tracer,
            context=otel_context.Context(),
            links=links,
            start_time=started_ns,
        ) as span:
            try:
                output = self._backend.predict(np.stack([job.tensor for job in jobs]))
                logits = check_batch_output(output, len(jobs), self.num_classes)
            except Exception as exc:
                if len(jobs) > 1:
                    raise  # the caller retries each request alone
                if metrics is not None:
                    metrics.record_inference_error(self._model, type(exc).__name__)
                failure = ModelInferenceException("The model failed on this input.")
                failure.__cause__ = exc  # the access log line carries its traceback
                set_span_error(exc, span)  # the batch span shows the failure too
                settled.append((jobs[0], failure))
                return
            batch_context = span.get_span_context()
        ended, ended_ns = self._clock(), time.time_ns()
        compute = ended - started
        self._times.record(len(jobs), compute)
        if metrics is not None:
            # Under tail sampling no request is decided yet: no exemplar could be
            # promised to lead to an exported trace. Under head sampling, the first
            # request whose trace was sampled (so exported), if any.
            first_trace = None
            if self._telemetry.tail is None:
                sampled = (link.context for link in links if link.context.trace_flags.sampled)
                first = next(sampled, None)
                first_trace = format(first.trace_id, "032x") if first is not None else None
            metrics.record_inference(self._model, compute, len(jobs), first_trace)
        finite = np.asarray(np.isfinite(logits).all(axis=1))
        for row, job in enumerate(jobs):
            if not finite[row]:  # only this input's scores are unusable
                if metrics is not None:
                    metrics.record_inference_error(self._model, "NonFiniteScores")
                settled.append(
                    (
                        job,
                        NonFiniteScoresException(
                            "The model gave non-finite scores for this input."
                        ),
                    )
                )
                continue
            queue_seconds = picked - job.enqueued
            if metrics is not None:
                metrics.record_queue_wait(self._model, queue_seconds)
            settled.append(
                (
                    job,
                    BatchOutcome(
                        logits=logits[row],
                        queue_seconds=queue_seconds,
                        compute_seconds=compute,
                        batch_size=len(jobs),
                        started_ns=started_ns,
                        ended_ns=ended_ns,
                        batch_span=batch_context if batch_context.is_valid else None,
                    ),
                )
            )

    def _publish(self) -> None:
        if self._telemetry.metrics is not None and not self.muted:
            self._telemetry.metrics.set_queue_size(self._model, self.pending)
