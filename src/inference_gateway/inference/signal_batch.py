"""Model-quality signals measured many answers at a time, off each request's path.

Each answer of a version with a reference leaves what its signals are measured from:
its confidences and, for an image, an `ImageProbe` (a sample of its crop: a view,
nothing copied). Measured one answer at a time, the signals cost 0.3 ms of server CPU
per image under load (2.5% of an image's), most of it the fixed cost of some thirty
small array calls and a dozen counter increments; measured together
(`quality.observe_many`, `quality.measure`) and counted by bucket, those costs are paid
once per batch. A batch is measured and counted at most `FLUSH_SECONDS` after its first
answer, as soon as it holds `MAX_PENDING`, when the version's host retires or closes,
and before every scrape of `/metrics`, so a scrape of one process always sees every
answer it gave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from inference_gateway.inference.quality import measure, observe_many

if TYPE_CHECKING:
    from inference_gateway.inference.host import Quality

#: The longest an answer waits before its signals are counted (a scrape counts them
#: at once; Prometheus scrapes every 15 s or so).
FLUSH_SECONDS = 1.0
#: The most answers waiting: each holds its confidences and its crop (150 KB for the
#: built-in model), alive until measured, so at most about 10 MB per served version.
MAX_PENDING = 64

#: Counts (signal, bucket) pairs, one per answer and signal.
Record = Callable[[list[tuple[str, str]]], None]


class SignalBatch:
    """Answers waiting for their signals, and what counts them once measured."""

    def __init__(self, record: Record) -> None:
        self._record = record
        self._pending: list[Quality] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, quality: Quality) -> None:
        """Queue one answer (called on the event loop)."""
        self._pending.append(quality)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Measure and count every waiting answer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        probes = [q.probe for q in pending if q.probe is not None]
        images = iter(measure(probes))
        observations = observe_many(
            [q.confidences for q in pending],
            [q.labels for q in pending],
            [next(images) if q.probe is not None else None for q in pending],
        )
        buckets: list[tuple[str, str]] = []
        for quality, observation in zip(pending, observations, strict=True):
            buckets += quality.reference.buckets_of(observation)
        self._record(buckets)
