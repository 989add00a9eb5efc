"""How long a forward pass of ``n`` images takes: the admission estimate's clock.

A batch's duration is modelled as ``fixed + per_image * n``, fitted to the most
recent batches with the Theil–Sen estimator (the median of the pairwise slopes, then
the median intercept): a few outliers — one pass that hung, one slowed by a
neighbour — move it no more than they would move a median.

Why a line and not one median batch duration: under a burst the running batches are
small (one or two images), while the batches that a queue will hold are full ones. On
a CPU a batch of four takes about four times one image, so one median duration for any
size under-estimated the queue fourfold when the burst began, admitted too much, and
answered those late; on a GPU a batch costs nearly the same whatever its size, so
scaling one image's time by the batch size would refuse what could be answered. The
line holds for both. With one size measured only, the slope is that size's median
duration over its size and there is no fixed part (pessimistic for a larger batch,
corrected by the first full batches: admission always lets a full batch wait).
"""

from __future__ import annotations

import statistics
from collections import deque

#: How many recent batches the estimate is fitted to.
RECENT_BATCHES = 16


class BatchTimes:
    """The recent forward passes' sizes and durations, and the line fitted to them."""

    def __init__(self, recent: int = RECENT_BATCHES) -> None:
        """Keep the last ``recent`` batches."""
        self._recent: deque[tuple[int, float]] = deque(maxlen=recent)
        # (fixed, per_image), replaced whole: the event loop reads it while the batcher's
        # thread refits it.
        self._line: tuple[float, float] | None = None

    @property
    def measured(self) -> bool:
        """Whether a batch has been measured yet."""
        return self._line is not None

    def record(self, size: int, seconds: float) -> None:
        """One forward pass of ``size`` images took ``seconds``; refit the line."""
        if size < 1:
            return
        self._recent.append((size, seconds))
        self._line = _fit(self._recent)

    def seconds(self, size: int) -> float:
        """The estimated duration of a batch of ``size`` images (0 before any, and for
        none)."""
        line = self._line
        if line is None or size < 1:
            return 0.0
        fixed, per_image = line
        return fixed + per_image * size


def _fit(points: deque[tuple[int, float]]) -> tuple[float, float]:
    """``(fixed, per_image)``, both ≥ 0, for the batches ``points``."""
    batches = list(points)
    slopes = [
        (t2 - t1) / (n2 - n1)
        for i, (n1, t1) in enumerate(batches)
        for n2, t2 in batches[i + 1 :]
        if n2 != n1
    ]
    if not slopes:  # one size only: proportional to the size
        return 0.0, statistics.median(t / n for n, t in batches)
    per_image = max(statistics.median(slopes), 0.0)
    fixed = statistics.median(t - per_image * n for n, t in batches)
    if fixed < 0:  # a line through the origin fits better than a negative fixed part
        return 0.0, statistics.median(t / n for n, t in batches)
    return fixed, per_image
