"""Model-quality signals measured many answers at a time: each answer is counted once,
against the reference it was answered with, within `FLUSH_SECONDS`."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import numpy as np
import pytest

from inference_gateway.inference import signal_batch
from inference_gateway.inference.host import Quality
from inference_gateway.inference.quality import (
    ANSWER_SIGNALS,
    SIGNALS,
    ImageProbe,
    ImageSignals,
    Observation,
    build_reference,
    measure,
    observe,
    observe_many,
)
from inference_gateway.inference.signal_batch import MAX_PENDING, SignalBatch
from tests.helpers import wait_until_async


def _reference(seed: int, bright: float):  # type: ignore[no-untyped-def]
    """A reference whose images are about ``bright`` luminance."""
    rng = random.Random(seed)
    observations = [
        Observation(
            label="tabby",
            confidence=rng.random(),
            margin=rng.random() / 2,
            entropy=rng.random(),
            image=ImageSignals(
                luminance=rng.gauss(bright, 10),
                contrast=rng.uniform(10, 90),
                pixels=640 * 480,
                aspect_ratio=1.0,
                format="png",
                saturation=rng.uniform(0, 120),
                sharpness=rng.uniform(1, 30),
                jpeg_quality=100.0,
            ),
        )
        for _ in range(200)
    ]
    return build_reference(observations, "0" * 64)


LABELS = ["tabby", "tiger cat", "espresso"]
CONFIDENCES = np.array([0.7, 0.2, 0.1])


def _answer(reference, level: int | None) -> Quality:  # type: ignore[no-untyped-def]
    """An answer of confidence 0.7 to an even image of ``level`` (None: a tensor)."""
    probe = None
    if level is not None:
        sample = np.full((56, 56, 3), level, dtype=np.uint8)
        probe = ImageProbe(sample=sample, pixels=640 * 480, aspect_ratio=1.0, format="png",
                           jpeg_quality=100.0)  # fmt: skip
    return Quality(reference, CONFIDENCES, LABELS, 0.7, probe)  # fmt: skip


def _pairs(recorded: list[list[tuple[str, str]]], signal: str) -> list[str]:
    """The buckets of ``signal``, in the order the answers were counted."""
    return [bucket for flush in recorded for s, bucket in flush if s == signal]


def test_answers_are_counted_once_each_within_the_flush_interval() -> None:
    asyncio.run(_answers_are_counted_once_each_within_the_flush_interval())


async def _answers_are_counted_once_each_within_the_flush_interval() -> None:
    recorded: list[list[tuple[str, str]]] = []
    batch = SignalBatch(recorded.append)
    reference = _reference(1, 120)
    for level in (30, 120, 220, None):
        batch.add(_answer(reference, level))
    assert recorded == [] and len(batch) == 4  # not measured on the answer's path
    await wait_until_async(lambda: bool(recorded), signal_batch.FLUSH_SECONDS * 10, "flush")
    assert len(recorded) == 1 and len(batch) == 0  # the four, in one flush
    counts = Counter(s for s, _ in recorded[0])
    # Every answer has the answer's signals; the tensor (None) no image signals.
    assert counts == {s: 4 if s in ANSWER_SIGNALS else 3 for s in SIGNALS}
    assert _pairs(recorded, "class") == [reference.bucket("class", "tabby")] * 4
    luminance = [reference.bucket("luminance", float(v)) for v in (30, 120, 220)]
    assert _pairs(recorded, "luminance") == luminance
    batch.flush()  # nothing left: nothing more
    assert len(recorded) == 1


def test_a_full_batch_is_measured_at_once_and_flush_empties_it() -> None:
    asyncio.run(_a_full_batch_is_measured_at_once_and_flush_empties_it())


async def _a_full_batch_is_measured_at_once_and_flush_empties_it() -> None:
    recorded: list[list[tuple[str, str]]] = []
    batch = SignalBatch(recorded.append)
    reference = _reference(1, 120)
    for _ in range(MAX_PENDING - 1):
        batch.add(_answer(reference, 100))
    assert recorded == []
    batch.add(_answer(reference, 100))
    assert len(_pairs(recorded, "luminance")) == MAX_PENDING and len(batch) == 0
    batch.add(_answer(reference, 100))
    batch.flush()
    assert len(_pairs(recorded, "luminance")) == MAX_PENDING + 1


def test_each_answer_is_bucketed_by_the_reference_it_was_answered_with() -> None:
    asyncio.run(_each_answer_is_bucketed_by_the_reference_it_was_answered_with())


async def _each_answer_is_bucketed_by_the_reference_it_was_answered_with() -> None:
    recorded: list[list[tuple[str, str]]] = []
    batch = SignalBatch(recorded.append)
    dark, bright = _reference(1, 40), _reference(2, 200)
    batch.add(_answer(dark, 120))
    batch.add(_answer(bright, 120))
    batch.flush()
    expected = [dark.bucket("luminance", 120.0), bright.bucket("luminance", 120.0)]
    assert _pairs(recorded, "luminance") == expected
    assert expected[0] != expected[1]


def test_answers_measured_together_are_measured_as_alone() -> None:
    rng = np.random.default_rng(4)
    rows = [rng.dirichlet(np.ones(10)) for _ in range(6)] + [np.array([1.0]), np.zeros(10)]
    labels = [[str(k) for k in range(row.size)] for row in rows]
    together = observe_many(rows, labels, [None] * len(rows))
    for row, names, observation in zip(rows, labels, together, strict=True):
        alone = observe(row, names, None)
        assert observation.label == alone.label
        assert observation.confidence == pytest.approx(alone.confidence)
        assert observation.margin == pytest.approx(alone.margin)
        assert observation.entropy == pytest.approx(alone.entropy)
        p = row / row.sum() if row.sum() > 0 else row
        if row.size > 1 and row.sum() > 0:  # the definition itself, computed plainly
            plain = -sum(x * math.log(x) for x in p if x > 0) / math.log(row.size)
            assert observation.entropy == pytest.approx(plain)


def test_measured_together_is_measured_alone() -> None:
    rng = np.random.default_rng(3)
    probes = [
        ImageProbe(
            sample=rng.integers(0, 256, (56, 56, 3), dtype=np.uint8),
            pixels=1,
            aspect_ratio=1.0,
            format="jpeg",
            jpeg_quality=90.0,
        )
        for _ in range(5)
    ]
    together = measure(probes)
    alone = [measure([p])[0] for p in probes]
    for a, b in zip(together, alone, strict=True):
        assert a.luminance == pytest.approx(b.luminance)
        assert a.contrast == pytest.approx(b.contrast)
        assert a.saturation == pytest.approx(b.saturation)
        assert a.sharpness == pytest.approx(b.sharpness)
