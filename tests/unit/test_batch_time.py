"""The admission estimate's clock: a batch's duration as a line in its size."""

from __future__ import annotations

import pytest

from inference_gateway.inference.batch_time import BatchTimes


def test_nothing_measured_estimates_nothing() -> None:
    times = BatchTimes()
    assert not times.measured
    assert times.seconds(4) == 0.0


def test_a_cpu_model_small_batches_predict_a_full_one() -> None:
    """On a CPU a batch costs about its size times one image: the batches of one and two
    that run when a burst begins must predict the full batches that its queue makes (one
    median duration for any size under-estimated the queue fourfold)."""
    times = BatchTimes()
    for size, seconds in [(1, 0.0125), (2, 0.0245), (1, 0.0118), (2, 0.0240), (1, 0.0121)]:
        times.record(size, seconds)
    assert times.seconds(4) == pytest.approx(0.048, rel=0.05)


def test_a_gpu_model_full_batches_cost_little_more_than_one_image() -> None:
    """A fixed cost per pass and little per image: a full batch is not its size times a
    batch of one (which would refuse work the model could do)."""
    times = BatchTimes()
    for size, seconds in [(1, 0.0051), (8, 0.0058), (32, 0.0081), (1, 0.0050), (16, 0.0066)]:
        times.record(size, seconds)
    assert times.seconds(32) == pytest.approx(0.0081, rel=0.05)
    assert times.seconds(1) == pytest.approx(0.0050, rel=0.05)


def test_one_size_only_is_proportional_to_the_size() -> None:
    times = BatchTimes()
    for _ in range(3):
        times.record(2, 0.02)
    assert times.seconds(2) == pytest.approx(0.02)
    assert times.seconds(4) == pytest.approx(0.04)  # pessimistic until a full batch runs


def test_outliers_move_the_line_no_more_than_a_median() -> None:
    """One pass that hung for half a minute among quick ones changes nothing much."""
    times = BatchTimes()
    for size in (1, 2, 3, 4, 1, 2, 3, 4):
        times.record(size, 0.01 * size)
    times.record(4, 30.0)
    assert times.seconds(4) == pytest.approx(0.04, rel=0.1)


def test_only_recent_batches_count() -> None:
    times = BatchTimes(recent=4)
    for _ in range(4):
        times.record(1, 1.0)
    for _ in range(4):
        times.record(1, 0.01)
    assert times.seconds(1) == pytest.approx(0.01)


def test_the_line_never_goes_below_zero() -> None:
    """Bigger batches measured quicker than small ones (noise) give no negative slope,
    and a negative fixed part gives a line through the origin instead."""
    times = BatchTimes()
    for size, seconds in [(1, 0.03), (4, 0.02), (1, 0.031), (4, 0.021)]:
        times.record(size, seconds)
    assert times.seconds(1) >= 0 and times.seconds(4) >= times.seconds(1) - 1e-12
    steep = BatchTimes()
    for size, seconds in [(1, 0.001), (2, 0.02), (3, 0.04)]:
        steep.record(size, seconds)
    assert steep.seconds(1) > 0
    assert steep.seconds(0) == 0.0
