"""OpenTelemetry tracing: a provider per app, the spec's span helpers, OTLP export.

`setup_tracing` builds the provider (or none when tracing is off: no per-request
cost); the standard ``OTEL_*`` variables keep their meaning (service name, sampler,
exporter endpoint, timeouts, SDK switch). Spans are exported off the request path
by a bounded `BatchSpanProcessor`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from golden_signals.asgi import HTTP_METHODS, OTHER_METHOD, header, route_path
from golden_signals.ids import OwnIds
from golden_signals.routes import route_template
from golden_signals.sampling import RecordedSpan, RecordingTracer, TailSampling

if TYPE_CHECKING:
    from golden_signals.asgi import ASGIApp, Message, Receive, Scope, Send

#: The tracer's (instrumentation scope's) name unless `get_tracer` is given another.
TRACER_NAME = "golden_signals"

#: The status of a request whose client went away before its answer (nginx's "client
#: closed request"): neither a success nor the server's failure.
CLIENT_CLOSED_REQUEST = 499

#: Why a span never reached the collector (the ``reason`` label of the drop counter).
SPAN_DROP_REASONS: tuple[str, ...] = ("queue_full", "export_failed")

#: Called with (outcome, count): outcome is "exported" or one of `SPAN_DROP_REASONS`.
SpanOutcomeCallback = Callable[[str, int], None]
#: Builds the tail sampler over the exporting processors, for the given provider.
TailSamplingFactory = Callable[[Sequence[SpanProcessor], TracerProvider], TailSampling]


class _CountingExporter(SpanExporter):
    """Passes batches on to ``inner`` and reports how many spans each outcome had."""

    def __init__(self, inner: SpanExporter, on_outcome: SpanOutcomeCallback) -> None:
        self._inner = inner
        self._on_outcome = on_outcome

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._on_outcome("export_failed", len(spans))
            raise
        ok = result is SpanExportResult.SUCCESS
        self._on_outcome("exported" if ok else "export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's bounded `BatchSpanProcessor`, counting what it exports and drops.

    The SDK drops a span when its queue (``OTEL_BSP_MAX_QUEUE_SIZE``) is full and loses
    a batch when the export fails; both happen silently apart from a rate-limited
    warning. Here each outcome is reported to ``on_outcome`` (the metrics'
    ``tracing_spans_*`` counters), so a dead or slow collector shows on a dashboard.
    """

    def __init__(self, exporter: SpanExporter, on_outcome: SpanOutcomeCallback) -> None:
        """Batch ``exporter``'s spans with the SDK's (``OTEL_BSP_*``) settings."""
        self._capacity = BatchSpanProcessor._default_max_queue_size()  # type: ignore[no-untyped-call]
        super().__init__(_CountingExporter(exporter, on_outcome), max_queue_size=self._capacity)
        self._on_outcome = on_outcome

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` for export; count it as dropped when the queue is full."""
        if span.context is not None and span.context.trace_flags.sampled:
            queue = getattr(self._batch_processor, "_queue", ())
            if len(queue) >= self._capacity:
                self._on_outcome("queue_full", 1)
        super().on_end(span)


#: The head samplers ``OTEL_TRACES_SAMPLER`` names (OpenTelemetry's specification), by
#: name: each given ``OTEL_TRACES_SAMPLER_ARG``'s ratio.
HEAD_SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "always_on": lambda _: ALWAYS_ON,
    "always_off": lambda _: ALWAYS_OFF,
    "parentbased_always_on": lambda _: DEFAULT_ON,
    "parentbased_always_off": lambda _: DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}


def head_sampler(name: str, ratio: float = 1.0) -> Sampler:
    """The head sampler ``OTEL_TRACES_SAMPLER`` would name ``name`` (any case), with
    ``ratio`` (``OTEL_TRACES_SAMPLER_ARG``) for the ratio-based ones: for an app that
    reads its settings from elsewhere than the process's environment (a ``.env`` file),
    which the SDK does not read. Raises ValueError for a name it does not know and a
    ratio outside [0, 1]."""
    make = HEAD_SAMPLERS.get(name.lower())
    if make is None:
        raise ValueError(f"unknown sampler {name!r}: one of {', '.join(HEAD_SAMPLERS)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a sampling ratio is within [0, 1], not {ratio}")
    return make(ratio)


def setup_tracing(
    *,
    service_name: str,
    service_version: str,
    environment: str,
    exporter: SpanExporter | None = None,
    processors: tuple[SpanProcessor, ...] = (),
    on_span_outcome: SpanOutcomeCallback | None = None,
    tail: TailSamplingFactory | None = None,
    sampler: Sampler | None = None,
) -> tuple[TracerProvider, TailSampling | None]:
    """Build a TracerProvider for one app, and its tail sampler (built by ``tail``).

    With ``tail`` every request's spans are recorded, not made, until the request is
    decided (`sampling.TailSampling`, whose ``tracer`` the app then uses); only kept
    requests' spans reach ``exporter`` and ``processors``. Without, head sampling by
    ``sampler``, or the one ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` name in
    the environment (default: parent-based always-on). ``OTEL_SERVICE_NAME`` overrides
    ``service_name``.
    ``exporter`` (usually OTLP/HTTP) is wrapped in a `BatchSpanProcessor`, whose
    queue is bounded and whose export runs on its own thread; ``on_span_outcome``
    hears how many spans were exported or dropped, and why.
    """
    resource = Resource.create(
        {"service.version": service_version, "deployment.environment": environment}
    )
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = TracerProvider(resource=resource, id_generator=OwnIds(), sampler=sampler)
    downstream: list[SpanProcessor] = []
    if exporter is not None:
        downstream.append(CountedBatchSpanProcessor(exporter, on_span_outcome or _ignore_outcome))
    downstream += processors
    if tail is not None:
        tail_sampling = tail(downstream, provider)
        provider.add_span_processor(tail_sampling)  # for shutdown and flush
        return provider, tail_sampling
    for processor in downstream:
        provider.add_span_processor(processor)
    return provider, None


def _ignore_outcome(outcome: str, count: int) -> None:
    """The outcome callback when nobody counts spans (metrics off)."""


def otlp_http_exporter(
    endpoint: str | None = None, timeout_seconds: float | None = None
) -> SpanExporter:
    """The OTLP/HTTP protobuf span exporter; unset arguments come from ``OTEL_*``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout_seconds)


def instrument_fastapi(app: Any, tracer: Tracer, excluded: frozenset[str] = frozenset()) -> None:
    """Create a server span per request of a FastAPI (or Starlette) ``app`` with
    ``tracer`` (W3C context in), none for the paths ``excluded``: `ServerSpanMiddleware`,
    added last, so outermost (the specification's helper; `instrument` does it all)."""
    app.add_middleware(ServerSpanMiddleware, tracer=tracer, excluded=excluded)


_W3C = TraceContextTextMapPropagator()
#: `SpanKind.SERVER` read once (an enum member's lookup costs about 60 ns on Python 3.11).
_SERVER = SpanKind.SERVER


def start_server_span(
    tracer: Tracer, scope: Scope, traceparent: str | None, tracestate: str | None = None
) -> TracedOperation:
    """The SERVER span of the HTTP request ``scope`` (stable HTTP semantic conventions),
    continuing ``traceparent``: named after the method until the router has matched
    (`end_server_span` names it after the route template)."""
    return TracedOperation(
        _span_method(scope["method"]), _server_attributes(scope), tracer=tracer,
        context=_caller_context(traceparent, tracestate), kind=_SERVER,
    )  # fmt: skip


def open_server_span(
    tracer: Tracer, scope: Scope, traceparent: str | None, tracestate: str | None = None
) -> Span:
    """`start_server_span`'s span, started now and not made current (the caller makes
    it current and ends it): under tail sampling a record started directly
    (`RecordingTracer.start_root_span`), with nothing to look up."""
    attributes = _server_attributes(scope)
    name = _span_method(scope["method"])
    if isinstance(tracer, RecordingTracer):
        parent = None
        if traceparent is not None:
            caller = trace.get_current_span(_caller_context(traceparent, tracestate))
            parent = caller.get_span_context()
        return tracer.start_root_span(name, parent, _SERVER, attributes, (), None, (False, False))
    context = _caller_context(traceparent, tracestate)
    return tracer.start_span(name, context, _SERVER, attributes, None, None, False, False)


def _span_method(method: str) -> str:
    """A server span's name's method: ``method``, or ``HTTP`` for one outside
    `asgi.HTTP_METHODS` (OpenTelemetry's conventions: a client's own text is unbounded)."""
    return method if method in HTTP_METHODS else "HTTP"


def _server_attributes(scope: Scope) -> dict[str, AttributeValue]:
    """A server span's attributes at its start (stable HTTP semantic conventions: a
    method outside `asgi.HTTP_METHODS` is `asgi.OTHER_METHOD`, the client's text in
    ``http.request.method_original``)."""
    method = scope["method"]
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method if method in HTTP_METHODS else OTHER_METHOD,
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope["path"],
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if method not in HTTP_METHODS:
        attributes["http.request.method_original"] = method
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    return attributes


def _caller_context(traceparent: str | None, tracestate: str | None) -> Context:
    """The context a request's W3C headers carry (empty without a ``traceparent``: a
    server span never continues whatever span is current)."""
    if traceparent is None:
        return Context()
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier)


def end_server_span(span: Span, method: str, route: str | None, status: int) -> None:
    """What a server span learns when its request is answered: the route template
    (its name, ``METHOD route``; the path never, it is unbounded), the status, and
    ERROR for a 5xx."""
    if route is not None:
        span.update_name(f"{_span_method(method)} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


class ServerSpanMiddleware:
    """One SERVER span per HTTP request, with the stable HTTP semantic conventions, for
    an app that takes its other signals elsewhere (`instrument_fastapi`);
    `middleware.ObservabilityMiddleware` makes the same span itself when given a tracer.

    In place of OpenTelemetry's ASGI/FastAPI instrumentation, which also wraps every
    ``receive`` and ``send`` and costs a fifth of a millisecond of CPU a request: here
    one span, started before the app runs and named ``METHOD route`` once the router has
    matched (the route template, with the prefixes of the ``Mount``s it went through,
    `routes.route_template`), continuing an incoming ``traceparent``; status ERROR for a
    5xx. Paths in ``excluded`` are not traced.
    """

    def __init__(
        self, app: ASGIApp, tracer: Tracer, excluded: frozenset[str] = frozenset()
    ) -> None:
        """Wrap ``app``, making spans with ``tracer``, none for the paths ``excluded``."""
        self.app = app
        self.tracer = tracer
        self.excluded = excluded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call inside its server span (HTTP only)."""
        if scope["type"] != "http" or route_path(scope) in self.excluded:
            await self.app(scope, receive, send)
            return
        status = 500
        started = False

        async def send_status(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        root_path = scope.get("root_path", "")
        operation = start_server_span(
            self.tracer, scope, header(scope, b"traceparent"), header(scope, b"tracestate")
        )
        with operation as span:
            try:
                await self.app(scope, receive, send_status)
            except asyncio.CancelledError:
                if not started:  # cancelled before any answer: its client went away
                    status = CLIENT_CLOSED_REQUEST
                raise
            finally:
                end_server_span(span, scope["method"], route_template(scope, root_path), status)


def _context_variable() -> ContextVar[Context] | None:
    """The context variable OpenTelemetry keeps the current context in, when its
    runtime context is the default one (``OTEL_PYTHON_CONTEXT=contextvars_context``)
    and holds it where its release 1.x does (private: else None, and `enter_span` goes
    through the API)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


try:  # private: where OpenTelemetry keeps the current span in a context
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # moved by a later release: `enter_span` goes through the API
    _CURRENT = None
else:
    _CURRENT = _context_variable()
_logger = logging.getLogger(__name__)
_set_item = dict.__setitem__


def enter_span(span: Span) -> Token[Context]:
    """Make ``span`` current: `opentelemetry.context.attach` of
    `opentelemetry.trace.set_span_in_context`, with the context variable set directly
    (four calls through the API fewer, each request and each span)."""
    variable = _CURRENT
    if variable is None:
        return otel_context.attach(trace.set_span_in_context(span))
    context = Context(variable.get())  # one copy (a `Context` refuses item assignment)
    _set_item(context, _SPAN_KEY, span)
    return variable.set(context)


def leave_span(token: Token[Context]) -> None:
    """Make current again what was before `enter_span` gave ``token``. Never raises:
    a token made in another context (a block entered in one task and left in another)
    is logged and left, as `opentelemetry.context.detach` does."""
    variable = _CURRENT
    if variable is None:
        otel_context.detach(token)
        return
    try:
        variable.reset(token)
    except (ValueError, RuntimeError):
        _logger.exception("Failed to detach context")


def get_tracer(provider: trace.TracerProvider | None, name: str = TRACER_NAME) -> Tracer:
    """A tracer called ``name`` from ``provider``; a no-op tracer when tracing is off."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(name)


def create_span(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    links: list[trace.Link] | None = None,
) -> TracedOperation:
    """A child span of the current one, to use as ``with create_span(...) as span``:
    current inside the block, exceptions recorded with status ERROR, ended on exit."""
    return TracedOperation(name, attributes, tracer=tracer, links=links)


class TracedOperation:
    """A span as a context manager: starts on entry, records errors, ends on exit.

    Built from ``start_span`` and a context token rather than the SDK's
    ``start_as_current_span``: the same span made current, without its
    generator-based context manager (a few µs less per span, about 20 µs a request
    with four of these per request and one per batch; bench/observability_parts.py).
    """

    __slots__ = ("_attributes", "_context", "_kind", "_links", "_name", "_start_time",
                 "_token", "_tracer", "span")  # fmt: skip

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        tracer: Tracer,
        links: list[trace.Link] | None = None,
        context: Context | None = None,
        start_time: int | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        """Remember what span to start: ``context`` is its parent's (default: current);
        ``kind`` is SERVER for the span of a call the app serves."""
        self._name = name
        self._attributes = attributes
        self._tracer = tracer
        self._links = links
        self._context = context
        self._start_time = start_time
        self._kind = kind
        self._token: object = None
        self.span: Span = trace.INVALID_SPAN

    def __enter__(self) -> Span:
        """Start the span and make it current."""
        # Positional, in the API's order (name, context, kind, attributes, links,
        # start_time, record_exception, set_status_on_exception): no keywords to match.
        self.span = self._tracer.start_span(
            self._name, self._context, self._kind, self._attributes, self._links,
            self._start_time, False, False,
        )  # fmt: skip
        self._token = enter_span(self.span)
        return self.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record an exception (status ERROR; a cancellation is none: the caller went
        away), restore the context and end the span."""
        try:
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                set_span_error(exc, self.span)
        finally:
            try:
                leave_span(self._token)  # type: ignore[arg-type]
            finally:
                self.span.end()


def add_span_event(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Add an event to the current span."""
    trace.get_current_span().add_event(name, attributes=attributes)


def set_span_attribute(key: str, value: AttributeValue) -> None:
    """Set one attribute on the current span."""
    trace.get_current_span().set_attribute(key, value)


def set_span_error(exc: BaseException, span: Span | None = None) -> None:
    """Record ``exc`` on ``span`` (default: current) and set its status to ERROR.

    An expected error (one whose ``expected`` attribute is true: a client error or a
    refusal under load) is recorded with its type and message but no stack trace: where
    a refusal was raised tells nothing, and formatting the trace was about a third of a
    refusal's CPU, which matters when a saturated server refuses hundreds of requests a
    second.
    """
    target = span if span is not None else trace.get_current_span()
    if getattr(exc, "expected", False) is True:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        target.add_event("exception", {"exception.type": kind, "exception.message": str(exc)})
    else:
        target.record_exception(exc)
    target.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))


def get_current_trace_id() -> str | None:
    """The active trace id as 32 hex characters, or None outside a valid span."""
    return trace_id_of(trace.get_current_span())


#: Trace flags (8 bits) as W3C writes them (two hex digits), by value: a lookup instead of a
#: format (a tenth of its cost). Ids are written as their bytes' hex (half the cost of
#: ``format(id, "032x")``, which parses its format spec each time).
FLAGS_HEX: tuple[str, ...] = tuple(f"{flags:02x}" for flags in range(256))


def hex_ids(span: Span) -> tuple[str, str, int] | None:
    """``span``'s trace id and span id as W3C writes them (32 and 16 hex digits) and its
    trace flags; None for an invalid span. A tail-sampling record (always sampled until
    decided) formats its ids once (`RecordedSpan.hex_ids`)."""
    if isinstance(span, RecordedSpan):
        return span.hex_ids()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return (
        ctx.trace_id.to_bytes(16, "big").hex(),
        ctx.span_id.to_bytes(8, "big").hex(),
        int(ctx.trace_flags),
    )


def text_ids(span: Span) -> tuple[str, str, int] | None:
    """`hex_ids` for text that leaves the process (an answer's ``traceparent``, an
    access line, an exemplar): a tail-sampling record is not indexed for links by it
    (`RecordedSpan.ids_text`)."""
    return span.ids_text() if type(span) is RecordedSpan else hex_ids(span)


def trace_id_of(span: Span) -> str | None:
    """``span``'s trace id as 32 hex characters, or None for an invalid span."""
    ids = hex_ids(span)
    return ids[0] if ids is not None else None


def get_current_span_id() -> str | None:
    """The active span id as 16 hex characters, or None outside a valid span."""
    ids = hex_ids(trace.get_current_span())
    return ids[1] if ids is not None else None


def current_traceparent(sampled: bool | None = None) -> str | None:
    """The W3C ``traceparent`` of the active span, for the response header; ``sampled``
    (the tail-sampling decision) replaces the span's own flag."""
    return traceparent_of(trace.get_current_span(), sampled)


def traceparent_of(span: Span, sampled: bool | None = None) -> str | None:
    """``span``'s W3C ``traceparent`` (None for an invalid span); ``sampled`` replaces
    its sampled flag."""
    return format_traceparent(hex_ids(span), sampled)


def format_traceparent(ids: tuple[str, str, int] | None, sampled: bool | None) -> str | None:
    """The W3C ``traceparent`` of a span whose `hex_ids` are ``ids`` (None: none);
    ``sampled`` replaces its sampled flag (`flags_text`)."""
    if ids is None:
        return None
    trace_id, span_id, flags = ids
    return f"00-{trace_id}-{span_id}-{flags_text(flags, sampled)}"


def flags_text(flags: int, sampled: object) -> str:
    """Trace ``flags`` as two hex digits, as a ``traceparent`` and a log line write them:
    their sampled bit tail sampling's ruling when ``sampled`` is one (a bool; None, or an
    app's own value, leaves the flags as they are); the other bits (random) stay."""
    if isinstance(sampled, bool):
        flags = (flags & ~0x01) | int(sampled)
    return FLAGS_HEX[flags & 0xFF]
