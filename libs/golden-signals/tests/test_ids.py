"""Request ids and trace ids as the library writes them: what other tools parse."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from golden_signals.middleware import new_request_id
from golden_signals.sampling import TailSampling
from golden_signals.tracing import hex_ids, traceparent_of


def test_request_ids_are_distinct_rfc_4122_version_4_uuids() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every variant digit (8, 9, a, b) occurs: the digit is drawn, not fixed.
    assert {text[19] for text in ids} == set("89ab")


class _SmallIds(IdGenerator):
    """Ids with leading zero digits, to see them kept."""

    def generate_trace_id(self) -> int:
        return 0xABC

    def generate_span_id(self) -> int:
        return 0x12


def test_ids_keep_their_leading_zeros_in_every_span_and_traceparent() -> None:
    trace_id, span_id = "0" * 29 + "abc", "0" * 14 + "12"
    sdk_span = NonRecordingSpan(SpanContext(0xABC, 0x12, True, TraceFlags(0x03)))
    assert hex_ids(sdk_span) == (trace_id, span_id, 3)
    assert traceparent_of(sdk_span) == f"00-{trace_id}-{span_id}-03"
    assert traceparent_of(sdk_span, sampled=False) == f"00-{trace_id}-{span_id}-02"
    record = TailSampling([], ratio=0.0, slow_seconds=1.0, ids=_SmallIds()).tracer.start_span("r")
    assert hex_ids(record) == (trace_id, span_id, 1)
    assert traceparent_of(record, sampled=False) == f"00-{trace_id}-{span_id}-00"


def test_forked_workers_draw_different_request_ids() -> None:
    """Ids come from a generator whose state a fork copies: each child seeds it anew,
    so the workers of a forking server (gunicorn) never repeat each other's ids."""
    import os

    new_request_id()  # the parent's state in use before the fork
    children = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write, ",".join(new_request_id() for _ in range(5)).encode())
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    drawn = []
    for pid, read in children:
        with os.fdopen(read) as pipe:
            drawn.append(pipe.read())
        os.waitpid(pid, 0)
    drawn.append(",".join(new_request_id() for _ in range(5)))
    ids = ",".join(drawn).split(",")
    assert len(ids) == 15 and len(set(ids)) == 15


def _tail_trace_id() -> int:
    return TailSampling([], ratio=0.0, slow_seconds=1.0).tracer.start_span("r")._trace_id


def _head_trace_id() -> int:
    from golden_signals.tracing import setup_tracing

    provider, _ = setup_tracing(service_name="s", service_version="1", environment="t")
    return provider.get_tracer("t").start_span("r").get_span_context().trace_id


@pytest.mark.parametrize("draw", [new_request_id, _tail_trace_id, _head_trace_id])
def test_an_app_that_seeds_random_does_not_repeat_ids(draw: Callable[[], object]) -> None:
    """ML code seeds `random` for reproducibility (``random.seed(0)``), in every worker
    alike: request ids and trace ids, under tail sampling and under the SDK's head
    sampling (OpenTelemetry's own generator draws from the module-level `random`), must
    not follow it."""
    import random

    state = random.getstate()
    try:
        random.seed(0)
        first = draw()
        random.seed(0)
        assert draw() != first
    finally:
        random.setstate(state)
