"""Tail sampling's ruling as a request's answer comes: one draw for the ratio, and only
for a request no other rule keeps."""

from __future__ import annotations

import itertools

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from golden_signals.sampling import Outcome, TailSampling, want_trace


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


def test_an_answer_begun_undecided_is_kept_at_its_end_only_for_what_its_end_shows() -> None:
    """Ruled as its status line goes (``final=False``) and not kept then, a request keeps
    its spans until its end: kept then if it failed, ran slow or asked for its trace
    meanwhile; never for a second draw of the ratio, nor for a refusal its beginning
    already had; and one kept as it began stays kept whatever its end."""
    drawn: list[float] = []
    kept_for: list[str] = []
    exported = InMemorySpanExporter()
    sampler = TailSampling(
        [SimpleSpanProcessor(exported)], ratio=0.5, slow_seconds=1.0, refused_per_second=1.0,
        on_kept=kept_for.append,
    )  # fmt: skip

    def draw() -> float:
        drawn.append(0.9)  # never below the ratio
        return 0.9

    sampler.random = draw

    def ruled(
        begun: tuple[Outcome, float], ended: tuple[Outcome, float], want: bool = False
    ) -> bool | None:
        span = sampler.tracer.start_root_span("GET", None)
        child = sampler.tracer.start_span("work", trace.set_span_in_context(span))
        assert sampler.decide(span, *begun, None, final=False) is False
        child.end()  # ended while undecided: held, not forgotten
        assert span.root.finished == [child]
        if want:
            with trace.use_span(span):
                assert want_trace("low_confidence") is True
        kept = sampler.decide(span, *ended, None)
        span.end()
        return kept

    assert ruled((Outcome.OK, 0.01), (Outcome.OK, 0.02)) is False
    assert ruled((Outcome.OK, 0.01), (Outcome.ERROR, 0.02)) is True
    assert ruled((Outcome.OK, 0.01), (Outcome.OK, 1.5)) is True
    assert ruled((Outcome.OK, 0.01), (Outcome.OK, 0.02), want=True) is True
    assert drawn == [0.9] * 4  # one draw each, as the answer began
    assert kept_for == ["error", "slow", "low_confidence"]
    assert [span.name for span in exported.get_finished_spans()] == ["work", "GET"] * 3
    sampler.refusals.take()  # the bucket empty: a refusal is judged as a healthy answer
    assert ruled((Outcome.REFUSED, 0.01), (Outcome.REFUSED, 0.02)) is False
    assert kept_for == ["error", "slow", "low_confidence"]  # no second look at the bucket
    early = sampler.tracer.start_root_span("GET", None)
    assert sampler.decide(early, Outcome.ERROR, 0.01, None, final=False) is True
    assert sampler.decide(early, Outcome.OK, 0.02, None) is True  # kept stays kept
