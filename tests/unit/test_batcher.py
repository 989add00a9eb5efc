"""The batcher: grouping, ordering, refusals, deadlines, failures and draining."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

from inference_gateway.errors import (
    DeadlineUnreachableException,
    InferenceTimeoutException,
    ModelInferenceException,
    QueueFullException,
    ServiceDrainingException,
)
from inference_gateway.inference.batcher import Batcher, BatchOutcome
from inference_gateway.observability.metrics import Metrics
from inference_gateway.observability.telemetry import Telemetry
from tests.scrape import parse, value

POISON = -7.0


class EchoBackend:
    """Logits that echo each input's first value, so every caller can check its row.

    Blocks while ``gate`` is clear; raises for any batch containing a POISON input.
    """

    name = "echo"
    memory_bytes = 0

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[float]] = []

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(timeout=30)
        firsts = [float(x) for x in batch[:, 0, 0, 0]]
        self.batches.append(firsts)
        if POISON in firsts:
            raise ValueError("poisoned input")
        logits = np.zeros((batch.shape[0], 10), dtype=np.float32)
        logits[:, 0] = batch[:, 0, 0, 0]
        return logits

    def close(self) -> None:
        self.gate.set()


def image(v: float) -> npt.NDArray[np.float32]:
    return np.full((3, 4, 4), v, dtype=np.float32)


def make_batcher(backend: EchoBackend, **kwargs: float) -> tuple[Batcher, Metrics]:
    metrics = Metrics(app_name="t", app_version="1", environment="test")
    options = {"max_batch_size": 4, "max_batch_delay_seconds": 0.05, "max_queue_size": 16}
    options.update(kwargs)
    batcher = Batcher(backend, Telemetry(metrics=metrics), model_name="m", **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher, metrics


def far() -> float:
    return time.monotonic() + 30


async def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


Futures = list["asyncio.Future[BatchOutcome]"]


async def occupy(
    batcher: Batcher, backend: EchoBackend, first: float, queued: tuple[float, ...] = ()
) -> tuple[asyncio.Future[BatchOutcome], Futures]:
    """Put ``first`` in the (blocked) model and ``queued`` in the queue behind it."""
    running = asyncio.ensure_future(batcher.submit(image(first), far()))
    await wait_for(backend.entered.is_set, "a batch running")
    waiting = [asyncio.ensure_future(batcher.submit(image(v), far())) for v in queued]
    await wait_for(lambda: batcher.pending == 1 + len(queued), f"{len(queued)} queued")
    return running, waiting


def test_each_caller_gets_its_own_row_in_any_order() -> None:
    backend = EchoBackend()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=8, max_queue_size=32)
        values = [float(v) for v in np.random.default_rng(3).permutation(20)]
        outcomes = await asyncio.gather(*(batcher.submit(image(v), far()) for v in values))
        for v, outcome in zip(values, outcomes, strict=True):
            assert outcome.logits[0] == v
            assert 1 <= outcome.batch_size <= 8
        assert sum(len(b) for b in backend.batches) == 20
        assert max(len(b) for b in backend.batches) > 1  # they really were batched
        await batcher.close(1)

    asyncio.run(scenario())


def test_batches_never_exceed_max_batch_size_and_fill_up_while_busy() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, metrics = make_batcher(backend, max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(image(100), far()))
        await wait_for(backend.entered.is_set, "first batch running")
        rest = [asyncio.ensure_future(batcher.submit(image(v), far())) for v in range(6)]
        await wait_for(lambda: batcher.pending == 7, "six queued behind the first")
        backend.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(b) for b in backend.batches] == [1, 4, 2]
        samples = parse(metrics.render(None)[0].decode())
        assert value(samples, "inference_batch_size_count", model="m") == 3
        assert value(samples, "inference_batch_size_sum", model="m") == 7
        assert value(samples, "inference_queue_wait_seconds_count", model="m") == 7
        assert value(samples, "inference_queue_size", model="m") == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_full_queue_refuses_at_once() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1, max_queue_size=2)
        running, queued = await occupy(batcher, backend, 1, (2, 3))
        with pytest.raises(QueueFullException):
            await batcher.submit(image(4), far())
        backend.gate.set()
        await asyncio.gather(running, *queued)
        assert [b[0] for b in backend.batches] == [1, 2, 3]
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_request_whose_deadline_passes_in_the_queue_is_504_and_never_computed() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1)
        running, _ = await occupy(batcher, backend, 1)
        with pytest.raises(InferenceTimeoutException):
            await batcher.submit(image(2), time.monotonic() + 0.05)
        backend.gate.set()
        await running
        await batcher.close(1)
        assert backend.batches == [[1.0]]  # the expired request was skipped

    asyncio.run(scenario())


def test_an_abandoned_request_is_dropped_from_the_queue() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1)
        running, _ = await occupy(batcher, backend, 1)
        gone = asyncio.ensure_future(batcher.submit(image(2), far()))
        await wait_for(lambda: batcher.pending == 2, "one queued")
        gone.cancel()  # what a client disconnect does to the request's task
        with pytest.raises(asyncio.CancelledError):
            await gone
        kept = asyncio.ensure_future(batcher.submit(image(3), far()))
        backend.gate.set()
        await asyncio.gather(running, kept)
        await batcher.close(1)
        assert [b[0] for b in backend.batches] == [1.0, 3.0]

    asyncio.run(scenario())


def test_a_failing_input_fails_alone_and_the_worker_survives() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, metrics = make_batcher(backend, max_batch_size=4)
        warm = asyncio.ensure_future(batcher.submit(image(0), far()))
        await wait_for(backend.entered.is_set, "first batch running")
        jobs = [asyncio.ensure_future(batcher.submit(image(v), far())) for v in (1, POISON, 3)]
        await wait_for(lambda: batcher.pending == 4, "three queued")
        backend.gate.set()
        results = await asyncio.gather(warm, *jobs, return_exceptions=True)
        assert results[1].logits[0] == 1  # type: ignore[union-attr]
        assert isinstance(results[2], ModelInferenceException)
        assert isinstance(results[2].__cause__, ValueError)
        assert results[3].logits[0] == 3  # type: ignore[union-attr]
        # The batch failed, then each input was retried alone.
        assert backend.batches[1:] == [[1.0, POISON, 3.0], [1.0], [POISON], [3.0]]
        after = await batcher.submit(image(9), far())
        assert after.logits[0] == 9
        samples = parse(metrics.render(None)[0].decode())
        assert (
            value(samples, "model_inference_errors_total", model="m", error_type="ValueError") == 1
        )
        await batcher.close(1)

    asyncio.run(scenario())


def test_admission_refuses_a_deadline_the_queue_cannot_meet() -> None:
    backend = EchoBackend()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1)
        for v in range(3):
            await batcher.submit(image(v), far())  # measures batch time
        assert batcher.batch_seconds is not None
        batcher._batch_seconds = 0.5  # as if each batch took half a second
        backend.gate.clear()
        running, queued = await occupy(batcher, backend, 7, (8, 9))
        assert batcher.estimated_wait(3) == pytest.approx(2.0)  # 3 batches + the running one
        calls = len(backend.batches)
        with pytest.raises(DeadlineUnreachableException):
            await batcher.submit(image(10), time.monotonic() + 1.0)
        backend.gate.set()
        await asyncio.gather(running, *queued)
        assert len(backend.batches) == calls + 3  # the refused one never queued
        await batcher.close(1)

    asyncio.run(scenario())


def test_one_stuck_batch_does_not_lock_admission_out() -> None:
    """A forward pass that hung for a while must not make every later deadline look
    unreachable: an idle batcher admits, and the estimate is a median of recent batches."""
    backend = EchoBackend()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1, max_batch_delay_seconds=0)
        for v in range(3):
            await batcher.submit(image(v), far())
        backend.gate.clear()
        stuck = asyncio.ensure_future(batcher.submit(image(3), far()))
        await wait_for(backend.entered.is_set, "the stuck batch to start")
        await asyncio.sleep(0.6)  # the pass hangs well past the deadlines below
        backend.gate.set()
        await stuck
        assert batcher.batch_seconds is not None and batcher.batch_seconds < 0.3
        # Even a stale estimate longer than the deadline admits when nothing is ahead.
        batcher._batch_seconds = 5.0
        outcome = await batcher.submit(image(4), time.monotonic() + 0.5)
        assert outcome.logits[0] == 4
        await batcher.close(1)

    asyncio.run(scenario())


def test_close_drains_queued_work_then_refuses() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=2)
        running, queued = await occupy(batcher, backend, 1, (2, 3))
        closing = asyncio.ensure_future(batcher.close(grace_seconds=10))
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceDrainingException):
            await batcher.submit(image(4), far())
        backend.gate.set()
        await closing
        outcomes = await asyncio.gather(running, *queued)
        assert [o.logits[0] for o in outcomes] == [1, 2, 3]

    asyncio.run(scenario())


def test_close_fails_what_the_grace_period_could_not_run() -> None:
    backend = EchoBackend()
    backend.gate.clear()

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1)
        running, _ = await occupy(batcher, backend, 1)
        queued = asyncio.ensure_future(batcher.submit(image(2), far()))
        await wait_for(lambda: batcher.pending == 2, "one queued")
        await batcher.close(grace_seconds=0.1)
        with pytest.raises(ServiceDrainingException):
            await queued
        backend.gate.set()
        assert (await running).logits[0] == 1

    asyncio.run(scenario())
