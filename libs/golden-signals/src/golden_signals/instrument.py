"""`instrument`: metrics, logs and traces for an ASGI app in one call."""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import REGISTRY, CollectorRegistry

from golden_signals.asgi import ASGIApp, Message, Receive, Scope, Send, header, route_path
from golden_signals.logs import (
    configured_logger,
    get_logger,
    serving_ended,
    serving_on,
    setup_logging,
)
from golden_signals.metrics import LATENCY_BUCKETS, HttpMetrics, SignalRegistry
from golden_signals.middleware import Hooks, ObservabilityMiddleware
from golden_signals.routes import template_mounts
from golden_signals.sampling import TailSampling
from golden_signals.tracing import get_tracer, setup_tracing

#: The attribute an instrumented app carries its `Instrumentation` in (idempotence).
_ATTRIBUTE = "_golden_signals"
#: Paths no signal records by default: the scrape itself and the usual liveness probe.
DEFAULT_EXCLUDE: tuple[str, ...] = ("/metrics", "/health")


@dataclass(frozen=True, slots=True)
class TailSamplingOptions:
    """Which traces tail sampling keeps: every failed (5xx), refused (503) and timed-out
    (504) request's, every one slower than ``slow_seconds``, every one whose caller sent
    a sampled ``traceparent``, and of the rest a ``ratio``."""

    ratio: float = 0.05
    slow_seconds: float = 0.5
    refused_per_second: float = 10.0


@dataclass(slots=True, weakref_slot=True)
class Instrumentation:
    """What `instrument` made for one app: serve ``app`` (the app itself for Starlette
    and FastAPI, which are changed in place; a wrapper for any other ASGI callable)."""

    app: ASGIApp
    metrics: HttpMetrics
    logger: structlog.typing.FilteringBoundLogger
    tracer: trace.Tracer
    tracer_provider: TracerProvider | None = None
    tail: TailSampling | None = None
    metrics_path: str | None = "/metrics"
    _closed: bool = field(default=False, repr=False)

    @property
    def registry(self) -> SignalRegistry:
        """The app's metrics (``render(accept)`` for an exposition of your own)."""
        return self.metrics.registry

    def start(self) -> None:
        """Begin publishing metrics for the other workers (idempotent; also done at the
        app's start-up and at its first request)."""
        self.registry.start()

    def stop(self) -> None:
        """Publish the last values and flush the spans (at the app's shutdown; the app
        may start again, as a test client does)."""
        self.registry.close()
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()

    def close(self) -> None:
        """`stop`, and shut the span pipeline down for good (at the process's exit)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def _tail_sampling(
    options: TailSamplingOptions,
    name: str,
    downstream: Sequence[SpanProcessor],
    provider: TracerProvider,
) -> TailSampling:
    """Tail sampling by ``options``, exporting to ``downstream`` (`setup_tracing`'s
    factory once ``options`` and the scope's ``name`` are bound)."""
    return TailSampling(
        downstream, ratio=options.ratio, slow_seconds=options.slow_seconds,
        refused_per_second=options.refused_per_second, resource=provider.resource,
        ids=provider.id_generator, scope_name=name,
    )  # fmt: skip


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _default_exporter() -> SpanExporter | None:
    """The span exporter the ``OTEL_*`` variables ask for: OTLP/HTTP when an OTLP
    endpoint is set (or ``OTEL_TRACES_EXPORTER=otlp``), the console for ``console``,
    none for ``none`` or when nothing is set (ids still flow into logs and headers)."""
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if chosen == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if chosen == "otlp" or (chosen == "" and endpoint):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def instrument(
    app: Any,
    *,
    service_name: str | None = None,
    service_version: str = "0.0.0",
    environment: str = "production",
    metrics_path: str | None = "/metrics",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    untraced: Sequence[str] = (),
    trace_response_header: bool = False,
    logs: bool = True,
    log_level: str = "INFO",
    log_format: str = "json",
    log_stream: TextIO | None = None,
    tracing: bool = True,
    exporter: SpanExporter | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    tail_sampling: TailSamplingOptions | None = TailSamplingOptions(),
    multiprocess_dir: str | None = None,
    include_registry: CollectorRegistry | None = REGISTRY,
    buckets: Sequence[float] = LATENCY_BUCKETS,
    hooks: Hooks | None = None,
) -> Instrumentation:
    """Give ``app`` (FastAPI, Starlette, or any ASGI callable) the golden signals.

    Metrics: `metrics.HttpMetrics` in a registry of this app's own, served at
    ``metrics_path`` (None: not served; render them with ``registry.render``), with the
    app's prometheus_client metrics (``include_registry``) beside; exact across workers
    when ``multiprocess_dir`` or ``PROMETHEUS_MULTIPROC_DIR`` is set. Logs: JSON lines
    on stdout (``logs=False`` leaves logging alone) with trace, span and request ids, an
    access line per request. Traces: a server span per request, W3C ``traceparent`` in
    (and out on every answer with ``trace_response_header``, its sampled flag tail
    sampling's ruling: off by default, as OpenTelemetry's response propagator is), tail
    sampling (``tail_sampling``; None, or ``OTEL_TRACES_SAMPLER`` set, for
    the SDK's head sampling); ``OTEL_SDK_DISABLED=true`` or ``tracing=False`` turns
    tracing off; the exporter comes from ``OTEL_*`` unless ``exporter`` is given.
    ``exclude``: paths no signal records; ``untraced``: paths counted and logged but not
    traced. ``hooks``: what the app changes (`middleware.Hooks`).

    The app's own spans come from ``Instrumentation.tracer`` (kept or dropped with their
    request's trace). The global tracer provider is left as it is: each app has its
    own, and with a global one FastAPI (≥ 0.160) starts its native telemetry, a second
    server span per request.

    Idempotent: a second call returns the first call's `Instrumentation`. Independent of
    the order of the app's own middleware and lifespan: the instrumentation is the
    outermost layer however late it is added, and starts and stops with the server.
    """
    existing = getattr(app, _ATTRIBUTE, None)
    if isinstance(existing, Instrumentation):
        return existing
    hooks = hooks if hooks is not None else Hooks()
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "app"
    if logs:
        setup_logging(log_level, log_format, log_stream or sys.stdout, logger_name=name)
    registry = SignalRegistry(
        multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        name=name,
        include=include_registry,
    )
    metrics = HttpMetrics(registry, buckets)
    provider: TracerProvider | None = None
    tail: TailSampling | None = None
    tracer: trace.Tracer = trace.NoOpTracer()
    if tracing and not _env_flag("OTEL_SDK_DISABLED"):
        options = None if os.environ.get("OTEL_TRACES_SAMPLER") else tail_sampling
        provider, tail = setup_tracing(
            service_name=name, service_version=service_version, environment=environment,
            exporter=exporter if exporter is not None else _default_exporter(),
            processors=tuple(span_processors),
            tail=None if options is None else partial(_tail_sampling, options, name),
        )  # fmt: skip
        tracer = tail.tracer if tail is not None else get_tracer(provider, name)
    instrumentation = Instrumentation(
        app=app, metrics=metrics, tracer=tracer,
        # Resolved once when this call configured logging (a lazy proxy resolves the
        # configuration at every line); the app's own configuration otherwise.
        logger=configured_logger() if logs else get_logger(),
        tracer_provider=provider, tail=tail, metrics_path=metrics_path,
    )  # fmt: skip
    excluded = frozenset(exclude)

    def layers(inner: ASGIApp) -> ObservabilityMiddleware:
        return ObservabilityMiddleware(
            inner, metrics=metrics, logger=instrumentation.logger, tail=tail,
            hooks=hooks, excluded=excluded, tracer=tracer if provider is not None else None,
            untraced=frozenset(untraced), trace_header=trace_response_header,
        )  # fmt: skip

    if hasattr(app, "build_middleware_stack"):  # Starlette, FastAPI
        _wrap_stack(app, instrumentation, layers, hooks)
    else:  # a plain ASGI app: maybe a middleware around a Starlette app, whose Mounts count
        template_mounts(app)
        instrumentation.app = _Served(_Outer(app, instrumentation=instrumentation, layers=layers))
    for instrumented in {id(app): app, id(instrumentation.app): instrumentation.app}.values():
        setattr(instrumented, _ATTRIBUTE, instrumentation)
    atexit.register(_close_at_exit, weakref.ref(instrumentation))  # not kept alive by it
    return instrumentation


def _close_at_exit(instrumentation: weakref.ref[Instrumentation]) -> None:
    """`Instrumentation.close` at the process's exit, if the app still exists."""
    alive = instrumentation()
    if alive is not None:
        alive.close()


def _wrap_stack(app: Any, instrumentation: Instrumentation, layers: Any, hooks: Hooks) -> None:
    """Make the instrumentation the outermost layer of ``app``'s middleware stack,
    whenever the stack is built (Starlette builds it at the first call), so middleware
    the app adds later, and Starlette's own error page, are inside it; and answer an
    unhandled exception with `Hooks.error_response` unless the app has its own handler."""
    build = app.build_middleware_stack

    def build_instrumented() -> ASGIApp:
        template_mounts(app)  # the app's routes are complete when its stack is built
        return _Outer(build(), instrumentation=instrumentation, layers=layers)

    app.build_middleware_stack = build_instrumented
    app.middleware_stack = None
    handlers = getattr(app, "exception_handlers", None)
    if isinstance(handlers, dict) and 500 not in handlers and Exception not in handlers:

        async def error_page(request: Any, exc: Exception) -> ASGIApp:
            return hooks.error_response(str(request.scope.get("state", {}).get("request_id", "")))

        handlers[Exception] = error_page


class _Outer:
    """The instrumentation's outermost layer: the scrape endpoint, start-up and
    shutdown, then the server span and the middleware around the app.

    Not a coroutine of its own: it returns the coroutine that serves the call (a frame
    and a coroutine fewer in every await of a request). A Starlette app awaits its
    middleware stack, so any awaitable will do; a server, which tells an ASGI 3 app by
    its coroutine function, is handed `_Served`."""

    def __init__(self, app: ASGIApp, *, instrumentation: Instrumentation, layers: Any) -> None:
        self.instrumentation = instrumentation
        self.app = app
        self.inner: ObservabilityMiddleware = layers(app)
        self._started = False

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "lifespan":
            return self._lifespan(scope, receive, send)
        if not self._started:
            self._started = True
            self.instrumentation.start()
        if kind not in ("http", "websocket"):
            return self.app(scope, receive, send)
        path = route_path(scope)
        if path == self.instrumentation.metrics_path and kind == "http":
            return self._scrape(scope, send)
        return self.inner.serve(scope, receive, send, path)

    async def _scrape(self, scope: Scope, send: Send) -> None:
        """Answer a scrape (GET or HEAD), rendered off the event loop (with several
        workers it waits for their publications)."""
        if scope["method"] not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        body, content_type = await asyncio.to_thread(
            self.instrumentation.registry.render, header(scope, b"accept")
        )
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope["method"] == "GET" else b""}
        )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start with the app and stop after it, whatever its own lifespan does; while
        it serves, its loop is where access lines may wait (`logs.serving_on`)."""
        loop = asyncio.get_running_loop()
        serving = False

        def ended() -> None:
            nonlocal serving
            if serving:
                serving = False
                serving_ended(loop)

        async def receive_wrapper() -> Message:
            nonlocal serving
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._started = True
                self.instrumentation.start()
                if not serving:
                    serving = True
                    serving_on(loop)
            return message

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                ended()
                self.instrumentation.stop()
                self._started = False
            elif kind == "lifespan.startup.failed":
                ended()
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            ended()


class _Served:
    """A plain ASGI app's instrumented face: `_Outer` as a coroutine function, which is
    how servers (uvicorn, hypercorn) tell an ASGI 3 app from an ASGI 2 one."""

    def __init__(self, app: _Outer) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
