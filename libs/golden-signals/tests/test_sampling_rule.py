"""Tail sampling's ruling as a request's answer comes: one draw for the ratio, and only
for a request no other rule keeps."""

from __future__ import annotations

import itertools

import pytest

from golden_signals.sampling import Outcome, TailSampling


@pytest.mark.parametrize(
    ("outcome", "seconds", "traceparent", "reason"),
    [
        (Outcome.OK, 0.01, None, "ratio"),
        (Outcome.OK, 0.01, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        (Outcome.OK, 2.0, None, None),
        (Outcome.ERROR, 0.01, None, None),
    ],
)
def test_a_request_is_drawn_once_and_only_when_no_other_rule_keeps_it(
    outcome: Outcome, seconds: float, traceparent: str | None, reason: str | None
) -> None:
    draws = itertools.cycle([0.1, 0.9, 0.2, 0.8, 0.29, 0.31])  # kept: < 0.3
    drawn: list[float] = []
    kept_for: list[str] = []

    def draw() -> float:
        drawn.append(next(draws))
        return drawn[-1]

    sampler = TailSampling([], ratio=0.3, slow_seconds=1.0, on_kept=kept_for.append)
    sampler.random = draw
    rulings = []
    for _ in range(6):
        span = sampler.tracer.start_root_span("GET", None)
        rulings.append(sampler.decide(span, outcome, seconds, traceparent))
        assert sampler.decide(span, outcome, seconds, traceparent) == rulings[-1]  # ruled once
        span.end()
    if reason == "ratio":
        assert drawn == [0.1, 0.9, 0.2, 0.8, 0.29, 0.31]  # one draw a request, not two
        assert rulings == [True, False, True, False, True, False]
        assert kept_for == ["ratio"] * 3
    else:  # kept by another rule (a sampled caller, slow, failed): never drawn
        assert drawn == []
        assert rulings == [True] * 6
        assert len(kept_for) == 6 and "ratio" not in kept_for
