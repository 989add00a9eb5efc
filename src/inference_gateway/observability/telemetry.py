"""The telemetry of one app, built by `create_app` and handed to the parts that report."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracer, Tracer

from golden_signals.logs import get_logger
from golden_signals.sampling import TailSampling
from inference_gateway.observability.metrics import Metrics

#: Paths whose requests are not traced (counted and logged all the same): probes and
#: scrapes would drown real traffic.
UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})


@dataclass(slots=True)
class Telemetry:
    """Metrics (None when switched off), a tracer (no-op when off), a logger, and the
    tail-sampling rule (None under head sampling or with tracing off)."""

    metrics: Metrics | None = None
    tracer_provider: TracerProvider | None = None
    tracer: Tracer = field(default_factory=NoOpTracer)
    logger: structlog.typing.FilteringBoundLogger = field(default_factory=get_logger)
    tail: TailSampling | None = None
