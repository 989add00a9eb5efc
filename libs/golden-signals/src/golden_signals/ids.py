"""Random ids (trace, span and request ids) from a generator of the library's own.

OpenTelemetry's `RandomIdGenerator` draws from the module-level `random`, which an app
may seed (``random.seed(0)``, as ML code does for reproducibility): every worker and
every restart would then draw the same trace ids. ``os.urandom`` is a system call each
time. Ids must be unique, not secret: here they come from a `random.Random` seeded from
``os.urandom`` at import and again in every forked child.
"""

from __future__ import annotations

import os
import random

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

_generator = random.Random()  # noqa: S311 - unique, not secret; seeded from os.urandom
os.register_at_fork(after_in_child=_generator.seed)
#: ``k`` random bits as an int (`random.Random.getrandbits` of the library's generator).
random_bits = _generator.getrandbits


class OwnIds(IdGenerator):
    """Trace and span ids from the library's generator, never the invalid zero."""

    def generate_span_id(self) -> int:
        span_id = random_bits(64)
        while span_id == INVALID_SPAN_ID:  # pragma: no cover - one draw in 2⁶⁴
            span_id = random_bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = random_bits(128)
        while trace_id == INVALID_TRACE_ID:  # pragma: no cover - one draw in 2¹²⁸
            trace_id = random_bits(128)
        return trace_id
