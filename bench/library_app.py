"""The small app of `bench.library_overhead`, served by uvicorn for `bench.library_server`:
bare, or instrumented the way ``LIBRARY_VARIANT`` names (one of `VARIANTS`).

    LIBRARY_VARIANT=golden-signals .venv/bin/python -m uvicorn bench.library_app:app
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bench import library_overhead
from bench.library_overhead import _app, _Dropping
from golden_signals import instrument


def bare() -> FastAPI:
    return _app()


def golden_signals(**options: Any) -> FastAPI:
    """All three signals with the defaults: JSON access lines to stdout (the server's
    log file), metrics, traces under tail sampling (kept spans dropped by the exporter);
    ``options`` change `instrument`'s arguments (`bench.library_server --parts`)."""
    app = _app()
    arguments = {"log_stream": sys.stdout, "include_registry": None, "exporter": _Dropping()}
    instrument(app, **{**arguments, **options})
    return app


def _each_line_at_once() -> FastAPI:
    """Ours with every access line written in its own system call, as before lines were
    written together (`golden_signals.logs._Writer.defer`)."""
    from golden_signals import logs

    def at_once(writer: logs._Writer, line: Any) -> None:
        writer.msg(logs._render_request_line(line))

    logs._Writer.defer = at_once  # type: ignore[method-assign,assignment]
    return golden_signals()


def _devnull() -> Any:
    return open(os.devnull, "w")


VARIANTS: dict[str, Callable[[], Any]] = {
    "bare": bare,
    "golden-signals": golden_signals,
    # One part changed each (`bench.library_server --parts`): what each costs.
    "golden-signals, logs at WARNING": lambda: golden_signals(log_level="WARNING"),
    "golden-signals, lines to /dev/null": lambda: golden_signals(log_stream=_devnull()),
    "golden-signals, tracing off": lambda: golden_signals(tracing=False),
    "golden-signals, each line at once": _each_line_at_once,
    "golden-signals, traceparent on answers": lambda: golden_signals(trace_response_header=True),
    # The alternatives as the in-process bench builds them (their spans' flush unused).
    "instrumentator": lambda: library_overhead.instrumentator().app,
    "opentelemetry": lambda: library_overhead.opentelemetry_fastapi().app,
}

_VARIANT = os.environ.get("LIBRARY_VARIANT", "bare")
if os.environ.get("LIBRARY_SPLIT") == "1":  # `bench.library_server --split`
    from bench import library_split

    library_split.install(_VARIANT)
app = VARIANTS[_VARIANT]()
