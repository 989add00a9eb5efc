"""The batcher: grouping, ordering, refusals, deadlines, failures and draining."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from inference_gateway.errors import (
    DeadlineUnreachableException,
    InferenceTimeoutException,
    ModelFailedException,
    ModelInferenceException,
    QueueFullException,
    ServiceDrainingException,
)
from inference_gateway.inference import batcher as batcher_module
from inference_gateway.inference.backends import Backend
from inference_gateway.inference.batcher import (
    MAX_CONSECUTIVE_CRASHES,
    Batcher,
    BatchOutcome,
)
from inference_gateway.observability.metrics import Metrics
from inference_gateway.observability.telemetry import Telemetry
from tests.helpers import json_log_capture, wait_until_async
from tests.scrape import parse, value

POISON = -7.0


class StepClock:
    """The batcher's forward-pass clock: stands still except while the backend runs,
    when it moves by ``step`` seconds per pass (per image with ``per_image``, as a
    CPU's pass takes)."""

    def __init__(self, step: float, *, per_image: bool = False) -> None:
        self.now = 100.0
        self.step = step
        self.per_image = per_image

    def __call__(self) -> float:
        return self.now


class EchoBackend:
    """Logits that echo each input's first value, so every caller can check its row.

    Blocks while ``gate`` is clear; raises for any batch containing a POISON input;
    each pass advances ``clock`` (when given) by its step.
    """

    name = "echo"
    memory_bytes = 0

    def __init__(self, clock: StepClock | None = None) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[float]] = []
        self.clock = clock

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(timeout=30)
        if self.clock is not None:
            self.clock.now += self.clock.step * (batch.shape[0] if self.clock.per_image else 1)
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


def make_batcher(
    backend: Backend, clock: StepClock | None = None, **kwargs: float
) -> tuple[Batcher, Metrics]:
    metrics = Metrics(app_name="t", app_version="1", environment="test")
    options = {"max_batch_size": 4, "max_batch_delay_seconds": 0.05, "max_queue_size": 16}
    options.update(kwargs)
    batcher = Batcher(
        backend,
        Telemetry(metrics=metrics),
        model_name="m",
        model_version="1",
        clock=clock or time.perf_counter,
        **options,  # type: ignore[arg-type]
    )
    batcher.start()
    return batcher, metrics


def far() -> float:
    return time.monotonic() + 30


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    await wait_until_async(condition, seconds=10, what=what)


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
        assert value(samples, "inference_batch_size_count", model_name="m", model_version="1") == 3
        assert value(samples, "inference_batch_size_sum", model_name="m", model_version="1") == 7
        assert (
            value(samples, "inference_queue_wait_seconds_count", model_name="m", model_version="1")
            == 7
        )
        assert value(samples, "inference_queue_size", model_name="m", model_version="1") == 0
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
        with pytest.raises(InferenceTimeoutException):  # the model stays blocked throughout
            await batcher.submit(image(2), time.monotonic() + 1.0)
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


def test_admission_refuses_a_deadline_the_queue_cannot_meet() -> None:
    clock = StepClock(0.5)  # each batch takes half a second
    backend = EchoBackend(clock)

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, clock, max_batch_size=1)
        for v in range(3):
            await batcher.submit(image(v), far())  # measures batch time
        assert batcher.estimated_wait(2) == 1.0  # two batches of half a second
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
    clock = StepClock(0.01)
    backend = EchoBackend(clock)

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, clock, max_batch_size=1, max_batch_delay_seconds=0)
        for v in range(3):
            await batcher.submit(image(v), far())
        clock.step = 30.0  # one pass hangs for half a minute
        await batcher.submit(image(3), far())
        assert batcher.estimated_wait(2) == pytest.approx(0.02)  # the median shrugs it off
        # Even an estimate longer than the deadline admits when nothing is ahead.
        clock.step = 5.0
        for v in range(5, 10):
            await batcher.submit(image(v), far())
        assert batcher.estimated_wait(2) == 10.0
        outcome = await batcher.submit(image(4), time.monotonic() + 1.0)
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
        await asyncio.sleep(0)  # `close` refuses new work before its first await
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


class _Escape(BaseException):
    """What no ``except Exception`` catches: a backend breaking out of the worker's loop."""


class FaultyEcho(EchoBackend):
    """`EchoBackend` that answers wrongly (``fault``) for any batch holding POISON."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        firsts = [float(x) for x in batch[:, 0, 0, 0]]
        if POISON not in firsts or self.fault == "exception":  # EchoBackend raises ValueError
            return super().predict(batch)
        self.batches.append(firsts)
        logits = np.zeros((batch.shape[0], 10), dtype=np.float32)
        logits[:, 0] = batch[:, 0, 0, 0]
        bad: dict[str, object] = {
            "fewer rows": logits[:-1],
            "more rows": np.concatenate([logits, logits[:1]]),
            "wrong class count": np.zeros((batch.shape[0], 11), dtype=np.float32),
            "non-float dtype": logits.astype(np.int64),
            "not an array": logits.tolist(),
            "one dimension": logits[:, 0],
        }
        if self.fault == "escape":
            raise _Escape("out of the loop")
        if self.fault in ("nan", "inf"):
            logits[firsts.index(POISON), 3] = np.nan if self.fault == "nan" else np.inf
            return logits
        return bad[self.fault]  # type: ignore[return-value]


async def _poisoned_batch(batcher: Batcher, backend: EchoBackend) -> list[object]:
    """Run 1, POISON, 3 in one batch (behind a held one); return their outcomes."""
    backend.gate.clear()
    warm = asyncio.ensure_future(batcher.submit(image(0), far()))
    await wait_for(backend.entered.is_set, "first batch running")
    jobs = [asyncio.ensure_future(batcher.submit(image(v), far())) for v in (1, POISON, 3)]
    await wait_for(lambda: batcher.pending == 4, "three queued")
    backend.gate.set()
    results = await asyncio.gather(warm, *jobs, return_exceptions=True)
    return results[1:]


#: fault -> (the batches the backend saw after the held one, the error counted)
_RETRIED = [[1.0, POISON, 3.0], [1.0], [POISON], [3.0]]
_FAULTS: dict[str, tuple[list[list[float]], str]] = {
    "exception": (_RETRIED, "ValueError"),
    "fewer rows": (_RETRIED, "ModelOutputError"),
    "more rows": (_RETRIED, "ModelOutputError"),
    "wrong class count": (_RETRIED, "ModelOutputError"),
    "non-float dtype": (_RETRIED, "ModelOutputError"),
    "not an array": (_RETRIED, "ModelOutputError"),
    "one dimension": (_RETRIED, "ModelOutputError"),
    # Scores are there but one row is unusable: only that row fails, no retry.
    "nan": ([[1.0, POISON, 3.0]], "NonFiniteScores"),
    "inf": ([[1.0, POISON, 3.0]], "NonFiniteScores"),
    # Out of the worker's loop altogether: the batch fails, the loop starts again.
    "escape": ([[1.0, POISON, 3.0]], "crash"),
}


@pytest.mark.parametrize("fault", list(_FAULTS))
def test_a_wrong_answer_fails_only_what_it_hit_and_the_worker_goes_on(fault: str) -> None:
    backend = FaultyEcho(fault)
    batches, error_type = _FAULTS[fault]

    async def scenario() -> None:
        batcher, metrics = make_batcher(backend, num_classes=10)
        with json_log_capture() as logs:
            one, poisoned, three = await _poisoned_batch(batcher, backend)
        assert isinstance(poisoned, ModelInferenceException)
        if error_type == "crash":  # every request of the pass that broke out gets a 500
            assert isinstance(one, ModelInferenceException)
            assert isinstance(three, ModelInferenceException)
            assert isinstance(poisoned.__cause__, _Escape)
        else:
            assert isinstance(one, BatchOutcome) and one.logits[0] == 1
            assert isinstance(three, BatchOutcome) and three.logits[0] == 3
        if error_type in ("ModelOutputError", "ValueError"):
            assert type(poisoned.__cause__).__name__ == error_type
        assert backend.batches[1:] == batches
        assert (await batcher.submit(image(9), far())).logits[0] == 9
        assert batcher.alive
        samples = parse(metrics.render(None)[0].decode())
        errors = value(
            samples,
            "model_inference_errors_total",
            model_name="m",
            model_version="1",
            error_type=error_type,
        )
        crashes = value(samples, "batcher_crashes_total", model_name="m", model_version="1")
        assert (errors, crashes) == ((0, 1) if error_type == "crash" else (1, 0))
        records = [json.loads(line) for line in logs.getvalue().splitlines()]
        crash = [r for r in records if r["message"] == "Batcher worker crashed; restarting"]
        assert len(crash) == crashes
        if crash:  # logged once, through the JSON logger, with its traceback
            assert crash[0]["level"] == "ERROR" and crash[0]["model_name"] == "m"
            assert crash[0]["error_type"] == "_Escape"
            assert "out of the loop" in json.dumps(crash[0]["exception"])
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_worker_that_keeps_crashing_gives_up_and_refuses_at_once() -> None:
    """Crashes with batches served between them are survived; five in a row are not."""
    backend = FaultyEcho("escape")

    async def crash(times: int, batcher: Batcher) -> None:
        for _ in range(times):
            assert batcher.alive
            with pytest.raises(ModelInferenceException):
                await batcher.submit(image(POISON), far())

    async def scenario() -> None:
        batcher, metrics = make_batcher(backend, max_batch_size=1)
        for _ in range(2):
            await crash(MAX_CONSECUTIVE_CRASHES - 1, batcher)
            assert (await batcher.submit(image(1), far())).logits[0] == 1  # resets the count
        await crash(MAX_CONSECUTIVE_CRASHES, batcher)
        await wait_for(lambda: not batcher.alive, "the worker to give up")
        with pytest.raises(ModelFailedException, match="crashed 5 times in a row"):
            await batcher.submit(image(1), far())
        samples = parse(metrics.render(None)[0].decode())
        assert (
            value(samples, "batcher_crashes_total", model_name="m", model_version="1")
            == 3 * MAX_CONSECUTIVE_CRASHES - 2
        )
        assert value(samples, "model_loaded", model_name="m", model_version="1") == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_an_answer_ready_only_after_the_deadline_is_a_504(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline is the server's promise: an answer that comes back late, on a loop
    too busy to notice the deadline first, is refused, not delivered."""
    backend = EchoBackend()
    backend.gate.clear()
    handed_over = threading.Event()

    def resolve_and_say(settled: list[Any]) -> None:
        resolve(settled)
        handed_over.set()

    resolve = batcher_module._resolve_all
    monkeypatch.setattr(batcher_module, "_resolve_all", resolve_and_say)

    async def scenario() -> None:
        batcher, _ = make_batcher(backend, max_batch_size=1)
        deadline = time.monotonic() + 1.0
        late = asyncio.ensure_future(batcher.submit(image(1), deadline))
        await wait_for(backend.entered.is_set, "the pass running")
        # Hold the event loop past the deadline while the pass finishes and its answer
        # is handed over: the timeout and the answer are then due at the same moment.
        while time.monotonic() <= deadline:
            time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop is the point
        backend.gate.set()
        # The worker has handed the answer to the loop, which is still held.
        assert handed_over.wait(30)  # blocking the loop is the point
        with pytest.raises(InferenceTimeoutException):
            await late
        await batcher.close(1)

    asyncio.run(scenario())


async def measured_then_held(batcher: Batcher, backend: EchoBackend) -> None:
    """Three passes to measure the batch time, then the model held (`occupy` next)."""
    for v in range(3):
        await batcher.submit(image(v), far())
    backend.gate.clear()
    backend.entered.clear()  # set by the passes above: wait for the next one's


def test_admission_keeps_the_queue_within_max_queue_wait() -> None:
    """Under overload the queue holds as much work as the latency objective allows, not
    as much as MAX_QUEUE_SIZE: a request arriving when it would be answered later than
    ``max_queue_wait`` is refused at once (queue_full), and the model stays busy. The
    images of a request already admitted are queued whatever they add up to."""
    clock = StepClock(0.1)  # each batch takes a tenth of a second

    async def scenario() -> None:
        backend = EchoBackend(clock)
        batcher, _ = make_batcher(backend, clock, max_batch_size=1, max_queue_wait_seconds=0.35)
        await measured_then_held(batcher, backend)
        running, queued = await occupy(batcher, backend, 7, (8, 9))
        assert batcher.estimated_wait(3) == pytest.approx(0.4)  # over the 0.35 s allowed
        with pytest.raises(QueueFullException, match="MAX_QUEUE_WAIT_MS"):
            batcher.check_admission(far(), arriving=True)  # its deadline is far: time bounds
        own_image = asyncio.ensure_future(batcher.submit(image(10), far()))  # an admitted
        await wait_for(lambda: batcher.pending == 4, "its image queued")  # request's image
        backend.gate.set()
        await asyncio.gather(running, *queued, own_image)
        assert [b[0] for b in backend.batches[-4:]] == [7.0, 8.0, 9.0, 10.0]
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_burst_s_first_small_batches_do_not_hide_what_its_queue_will_take() -> None:
    """When a burst begins the batches measured are small, the queue's are full: on a
    CPU (each image 10 ms) a request behind a running image and a full batch is answered
    in 10 + 40 + 10 ms, which a 50 ms bound refuses. One median batch duration for any
    size estimated 3 x 10 ms and admitted it, to be answered late."""
    clock = StepClock(0.01, per_image=True)

    async def scenario() -> None:
        backend = EchoBackend(clock)
        batcher, _ = make_batcher(backend, clock, max_batch_size=4, max_queue_wait_seconds=0.05)
        await measured_then_held(batcher, backend)  # three batches of one image
        running, queued = await occupy(batcher, backend, 7, (8, 9, 10, 11))
        assert batcher.estimated_wait(5) == pytest.approx(0.06)
        assert batcher.estimated_wait(2) == pytest.approx(0.03)  # its own batch of two
        with pytest.raises(QueueFullException, match="MAX_QUEUE_WAIT_MS"):
            batcher.check_admission(far(), arriving=True)
        backend.gate.set()
        await asyncio.gather(running, *queued)
        await batcher.close(1)

    asyncio.run(scenario())


def test_without_max_queue_wait_the_queue_fills_to_its_size() -> None:
    clock = StepClock(0.1)

    async def scenario() -> None:
        backend = EchoBackend(clock)
        batcher, _ = make_batcher(backend, clock, max_batch_size=1, max_queue_wait_seconds=0.0)
        await measured_then_held(batcher, backend)
        running, queued = await occupy(batcher, backend, 7, (8, 9))
        batcher.check_admission(far(), arriving=True)  # no bound but the size
        admitted = asyncio.ensure_future(batcher.submit(image(10), far()))
        await wait_for(lambda: batcher.pending == 4, "the fourth request queued")
        backend.gate.set()
        await asyncio.gather(running, *queued, admitted)
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_model_slower_than_max_queue_wait_still_gets_a_full_batch_queued() -> None:
    """However slow the forward pass is next to the bound, a full batch may wait behind
    the running one: the bound shortens queues, it never starves the model."""
    clock = StepClock(1.0)  # each batch takes a second, far over the 0.35 s allowed

    async def scenario() -> None:
        backend = EchoBackend(clock)
        batcher, _ = make_batcher(backend, clock, max_batch_size=2, max_queue_wait_seconds=0.35)
        await measured_then_held(batcher, backend)
        running, queued = await occupy(batcher, backend, 7, (8,))
        batcher.check_admission(far(), arriving=True)  # a full batch may wait: admitted
        queued.append(asyncio.ensure_future(batcher.submit(image(9), far())))
        await wait_for(lambda: batcher.pending == 3, "a full batch waiting")
        with pytest.raises(QueueFullException, match="MAX_QUEUE_WAIT_MS"):
            batcher.check_admission(far(), arriving=True)  # a second batch would not
        backend.gate.set()
        await asyncio.gather(running, *queued)
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_deadline_already_passed_is_refused_saying_so() -> None:
    async def scenario() -> None:
        batcher, _ = make_batcher(EchoBackend())
        with pytest.raises(DeadlineUnreachableException, match="already passed"):
            batcher.check_admission(time.monotonic() - 0.001, arriving=True)
        await batcher.close(1)

    asyncio.run(scenario())
