"""Golden signals for any ASGI app in one call: Prometheus metrics exact across workers
with exemplars, JSON logs that carry trace and request ids, OpenTelemetry traces with
tail sampling, and SLO rules, alerts and a dashboard generated from the app's routes.

    from golden_signals import instrument
    instrument(app)
"""

from golden_signals.instrument import (
    DEFAULT_EXCLUDE,
    Instrumentation,
    TailSamplingOptions,
    instrument,
)
from golden_signals.logs import LogContext, get_logger, setup_logging
from golden_signals.metrics import HttpMetrics, SignalRegistry
from golden_signals.middleware import Hooks, RequestRecord
from golden_signals.routes import UNMATCHED_ENDPOINT, route_template

__all__ = [
    "DEFAULT_EXCLUDE",
    "UNMATCHED_ENDPOINT",
    "Hooks",
    "HttpMetrics",
    "Instrumentation",
    "LogContext",
    "RequestRecord",
    "SignalRegistry",
    "TailSamplingOptions",
    "get_logger",
    "instrument",
    "route_template",
    "setup_logging",
]
