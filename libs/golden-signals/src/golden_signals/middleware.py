"""ASGI middleware that gives every request its id, its span, its metrics and its access
log line.

It makes the request's server span itself (when given a tracer: one layer instead of
two, one scan of the headers, one route-template lookup), so that trace ids are in
everything it records, and it sits outside the app's exception handlers and
middleware (so it sees the final status of every response, a 404, 405 or 413
included). An exception nobody handled is logged once, on the request's access line,
and answered with a 500 that carries the request id (`Hooks.error_response`).

Latency ends when the answer's last byte is handed to the server: a background task
that runs after it is not in the request's latency (its failure is still counted and
logged). The time to the status line (first byte) is recorded apart, for streamed
answers. A WebSocket session is counted (``method="WEBSOCKET"``; 101 accepted, 403
refused, 500 failed) but is no latency: its length is the client's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from golden_signals.asgi import ASGIApp, Message, Receive, Scope, Send, route_path
from golden_signals.ids import random_bits
from golden_signals.logs import (
    REQUEST_FIELDS,
    debug_enabled,
    log_request_complete,
    log_request_start,
    write_request_line,
)
from golden_signals.metrics import RequestRecorder
from golden_signals.routes import UNMATCHED_ENDPOINT, endpoint_of, route_template
from golden_signals.sampling import Outcome, TailSampling, http_outcome
from golden_signals.tracing import (
    CLIENT_CLOSED_REQUEST,
    end_server_span,
    enter_span,
    format_traceparent,
    leave_span,
    open_server_span,
    set_span_error,
    text_ids,
)

_REQUEST_ID_BYTES = b"x-request-id"
_USER_ID_BYTES = b"x-user-id"
#: The request headers the middleware reads.
_SCANNED = frozenset({_REQUEST_ID_BYTES, _USER_ID_BYTES, b"traceparent", b"tracestate"})
#: The response headers the middleware sets (any the app set are replaced): without and
#: with the ``traceparent`` of the answer (``trace_header``).
_OURS = (frozenset({_REQUEST_ID_BYTES}), frozenset({_REQUEST_ID_BYTES, b"traceparent"}))
#: A healthy answer's outcome, read once (an enum member's lookup costs about 60 ns).
_OK = Outcome.OK
_SANE_TOKEN = re.compile(r"[A-Za-z0-9._:@\-]{1,128}")


def new_request_id() -> str:
    """A random UUID (version 4) as text, without building a `uuid.UUID` (a third of
    the cost), its bits from the library's own generator (`ids.random_bits`: no system
    call, and not the module-level `random` an app may seed)."""
    h = "%032x" % (random_bits(128) & _NOT_VERSION | _UUID4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: A UUID's version (4 bits at 76) and variant (2 bits at 62) cleared, and set to
#: version 4, variant RFC 4122 (10).
_NOT_VERSION = ~((0xF << 76) | (0x3 << 62)) & (2**128 - 1)
_UUID4 = (0x4 << 76) | (0x2 << 62)


def sanitize_token(value: str | None) -> str | None:
    """Return ``value`` if it is a sane token (≤128 safe characters), else None."""
    if value is not None and _SANE_TOKEN.fullmatch(value):
        return value
    return None


def request_id_from(value: str | None) -> str:
    """A request's id: the caller's (``X-Request-ID``) when it is a sane token, else a
    new one (`new_request_id`)."""
    if value is not None and sanitize_token(value) is not None:  # absent: no call
        return value
    return new_request_id()


def _record_error(state: dict[str, Any], error: BaseException | None) -> None:
    """Note ``error`` as the request's unless the app noted one."""
    if error is not None:
        state.setdefault("error", error)


@dataclass(slots=True)
class RequestRecord:
    """One request as the middleware saw it, handed to the `Hooks` when it is over."""

    scope: Scope
    method: str
    endpoint: str
    status: int
    duration_seconds: float
    request_id: str
    first_byte_seconds: float | None = None
    error: BaseException | None = None  # what the app recorded (``state["error"]``) or raised
    unhandled: Exception | None = None  # an exception nobody handled (its traceback is logged)
    sampled: bool | None = None  # tail sampling's ruling on the trace (None: none)


class Hooks:
    """What an app may change about the middleware, by subclassing: the body of an
    unhandled exception's 500, what a cancelled request records, its own per-request
    metrics, and the access line. The defaults suit any app."""

    def error_response(self, request_id: str) -> ASGIApp:
        """The 500 answer for an exception nobody handled: no internals, the request id."""
        body = orjson.dumps({"detail": "Internal Server Error", "request_id": request_id})

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return answer

    def cancelled_error(self) -> BaseException | None:
        """What a request cancelled before its answer (its client went away) records as
        its error (None: nothing; its status is 499 either way)."""
        return None

    def finished(self, record: RequestRecord) -> None:
        """Called once per request after its metrics, before its access line: the app's
        own per-request metrics (none by default)."""

    def access_line(
        self, record: RequestRecord, logger: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Write the request's one access line (`logs.log_request_complete`): INFO,
        WARNING for a 4xx or an expected 5xx, ERROR with the traceback otherwise."""
        fields: dict[str, Any] = {}
        if record.sampled is not None:
            fields["trace_sampled"] = record.sampled
        error = record.error
        if error is not None:
            fields["error_type"] = type(error).__name__
        unhandled = record.unhandled
        if unhandled is None and isinstance(error, Exception) and record.status >= 500:
            unhandled = error
        log_request_complete(
            logger, record.method, record.endpoint, record.status,
            record.duration_seconds * 1000, exc_info=unhandled,
            expected=getattr(error, "expected", False) is True, **fields,
        )  # fmt: skip


class ObservabilityMiddleware:
    """Request id, user id, active requests, RED metrics, access log, trace headers and,
    given a ``tracer``, the request's server span: all in one layer, with one scan of
    the request's headers and one route-template lookup per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: RequestRecorder | None,
        logger: structlog.typing.FilteringBoundLogger,
        tail: TailSampling | None = None,
        hooks: Hooks | None = None,
        excluded: frozenset[str] = frozenset(),
        tracer: Tracer | None = None,
        untraced: frozenset[str] = frozenset(),
        trace_header: bool = False,
    ) -> None:
        """Wrap ``app``, recording into ``metrics`` and logging with ``logger``; the
        paths ``excluded`` pass through unmeasured. With ``tracer`` each HTTP request
        gets its SERVER span (`tracing.start_server_span`), except the paths
        ``untraced`` (counted and logged all the same). ``trace_header``: every answer
        carries its span's ``traceparent``, sampled flag per tail sampling's ruling."""
        self.app = app
        self.metrics = metrics
        self.logger = logger
        self.tail = tail
        self.hooks = hooks if hooks is not None else Hooks()
        self.excluded = excluded
        self.tracer = tracer
        self.untraced = untraced
        self.trace_header = bool(trace_header)  # (it indexes `_OURS`)

    @property
    def hooks(self) -> Hooks:
        """What the app changes about the middleware (`Hooks`)."""
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: Hooks) -> None:
        self._hooks = hooks
        # Neither per-request hook replaced (in a subclass or on the object): a
        # request's end writes the default access line without building its
        # `RequestRecord` or calling the hooks.
        kind, own = type(hooks), getattr(hooks, "__dict__", {})
        self._plain_hooks = (
            kind.finished is Hooks.finished
            and kind.access_line is Hooks.access_line
            and "finished" not in own
            and "access_line" not in own
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, measuring it if it is HTTP or a WebSocket."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self.serve(scope, receive, send, route_path(scope))

    def serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> Awaitable[None]:
        """What serves an HTTP request or a WebSocket whose path, as the app's routes
        see it, is ``path`` (`asgi.route_path`): for a layer outside this one that read
        the path already (`instrument`'s), one coroutine frame and one path less."""
        if path in self.excluded:
            return self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        return self._http(scope, receive, send, path not in self.untraced)

    async def _http(  # noqa: PLR0912, PLR0915 - one function on purpose (docstring)
        self, scope: Scope, receive: Receive, send: Send, traced: bool
    ) -> None:
        """Serve one HTTP request: its id, span, metrics, access line and trace headers.

        Written as one function, most helpers it would call inlined, on purpose: what a
        request costs here is mostly how much distinct code it runs (instruction-cache
        and branch-predictor misses), not how much work (docs/performance.md)."""
        start = time.perf_counter()
        root_path = scope.get("root_path", "")  # before the Mounts add theirs
        found: dict[bytes, str] = {}  # the headers read, each its first value, in one pass
        for key, value in scope.get("headers", ()):
            if key in _SCANNED and key not in found:
                found[key] = value.decode("latin-1")
        request_id = request_id_from(found.get(_REQUEST_ID_BYTES))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        method = scope["method"]
        traceparent = found.get(b"traceparent")
        status = 500
        started = False
        first_byte: float | None = None
        answered: float | None = None
        unhandled: Exception | None = None

        async def send_wrapper(message: Message) -> None:
            # A coroutine function, as an app may need (asgiref's ``AsyncToSync``, a
            # task made of ``send(message)``), whatever the server's ``send`` is.
            nonlocal status, started, first_byte, answered
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                status = message["status"]
                first_byte = time.perf_counter() - start
                # The request id and, if asked for, the ``traceparent`` in the headers
                # (any the app set replaced).
                trace_header = self.trace_header
                ours = _OURS[trace_header]
                headers = list(message.get("headers", ()))
                for header in headers:  # rarely: the app set one of ours
                    if header[0].lower() in ours:
                        headers = [h for h in headers if h[0].lower() not in ours]
                        break
                headers.append((_REQUEST_ID_BYTES, request_id.encode()))
                if trace_header:
                    # Its sampled flag: whether tail sampling keeps the trace as the answer
                    # begins (its end may still keep it, never drop it: `_decide`).
                    current = span if span is not None else trace.get_current_span()
                    sampled = self._decide(status, first_byte, current, traceparent, final=False)
                    # (Text that leaves the process: the record is not indexed for links.)
                    traceparent_out = format_traceparent(text_ids(current), sampled)
                    if traceparent_out is not None:
                        headers.append((b"traceparent", traceparent_out.encode()))
                message["headers"] = headers
            elif kind == "http.response.body":
                if not message.get("more_body", False):
                    answered = time.perf_counter()  # the last byte: background tasks come after
            elif kind == "http.response.pathsend" or (
                kind == "http.response.zerocopysend" and not message.get("more_body", False)
            ):  # the server sends a file itself (ASGI extensions): its last message
                answered = time.perf_counter()
            await send(message)

        if self.metrics is not None:
            self.metrics.active_requests.inc()
        fields = {"request_id": request_id, "method": method}
        user_id = found.get(_USER_ID_BYTES)
        if user_id is not None and sanitize_token(user_id) is not None:
            fields["user_id"] = user_id
        span: Span | None = None
        if self.tracer is not None and traced:
            span = open_server_span(self.tracer, scope, traceparent, found.get(b"tracestate"))
            span_token = enter_span(span)
        fields_token = REQUEST_FIELDS.set(fields)
        try:
            if debug_enabled():
                log_request_start(self.logger, method, scope["path"][:256])
            try:
                await self.app(scope, receive, send_wrapper)
            except asyncio.CancelledError:
                if not started:  # cancelled before any answer: its client went away
                    status = CLIENT_CLOSED_REQUEST
                    _record_error(state, self.hooks.cancelled_error())
                raise
            except Exception as exc:
                # An answer cut short is a 500 even after a 200's start; after its last
                # byte (a background task's failure) the answer sent stands.
                status = 500 if answered is None else status
                state["error"] = unhandled = exc
                if not started:
                    await self.hooks.error_response(request_id)(scope, receive, send_wrapper)
            finally:
                end = answered if answered is not None else time.perf_counter()
                self._finish(
                    scope, root_path, method, status, end - start, fields, first_byte,
                    unhandled, span, traceparent,
                )  # fmt: skip
        except BaseException as exc:  # a cancellation, or what no `except Exception` takes
            if span is not None and not isinstance(exc, asyncio.CancelledError):
                set_span_error(exc, span)  # a cancellation is no error: the caller left
            raise
        finally:
            try:
                REQUEST_FIELDS.reset(fields_token)
            finally:
                if span is not None:
                    leave_span(span_token)
                    span.end()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count one WebSocket session: 101 once accepted, 403 when closed before, 500
        when the app failed before accepting."""
        root_path = scope.get("root_path", "")
        status = 403
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.http.response.start":  # refused with an answer
                status = message["status"]
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            error = exc
            if status != 101:
                status = 500
            raise
        finally:
            endpoint = endpoint_of(scope, root_path)
            if self.metrics is not None:
                self.metrics.record_request("WEBSOCKET", endpoint, status, None)
                if error is not None:
                    self.metrics.record_error(endpoint, type(error).__name__)
            log_request_complete(
                self.logger, "WEBSOCKET", endpoint, status, (time.perf_counter() - start) * 1000,
                exc_info=error,
            )  # fmt: skip

    def _decide(
        self, status: int, duration: float, span: Span, traceparent: str | None,
        final: bool = True,
    ) -> bool | None:  # fmt: skip
        """Tail sampling's ruling on this request's trace, whose server span is ``span``
        and which arrived with ``traceparent`` (None: no ruling, as under head sampling or
        for an untraced route): at the request's end (``final``), when its status and its
        whole duration are known (a stream may fail or run slow after its status line),
        or as its answer begins, for the answer's ``traceparent`` (`TailSampling.decide`:
        a trace kept then stays kept; one not kept then may still be at the end)."""
        tail = self.tail
        if tail is None:
            return None
        outcome = _OK if status < 500 else http_outcome(status)
        return tail.decide(span, outcome, duration, traceparent, final=final)

    def _finish(
        self, scope: Scope, root_path: str, method: str, status: int, duration: float,
        fields: dict[str, str],
        first_byte: float | None, unhandled: Exception | None, span: Span | None,
        traceparent: str | None,
    ) -> None:  # fmt: skip
        """Name the server span (``span``, None when the request has none of its own)
        after the route unless tail sampling dropped its trace (nothing would read it),
        record the request's metrics, the app's own (`Hooks.finished`),
        and write its one access line (`Hooks.access_line`); ``fields``: the request's
        log fields (`logs.REQUEST_FIELDS`)."""
        route = route_template(scope, root_path)
        endpoint = route if route is not None else UNMATCHED_ENDPOINT
        current = span if span is not None else trace.get_current_span()
        sampled = self._decide(status, duration, current, traceparent)
        if span is not None and sampled is not False:  # a dropped trace's span goes nowhere
            end_server_span(span, method, route, status)
        error = scope["state"].get("error")
        if not isinstance(error, BaseException):
            error = None
        metrics = self.metrics
        if metrics is not None:
            # An exemplar names a trace only when that trace is exported: kept by tail
            # sampling, or (no ruling: head sampling) sampled by its span's flag.
            ids = text_ids(current) if sampled is not False else None
            trace_id = ids[0] if ids is not None and (sampled or ids[2] & 1) else None
            metrics.record_request(method, endpoint, status, duration, trace_id, first_byte)
            if error is not None:
                metrics.record_error(endpoint, type(error).__name__)
            metrics.active_requests.dec()
        if self._plain_hooks and error is None and unhandled is None:  # no record needed
            logger, duration_ms = self.logger, duration * 1000
            if not write_request_line(
                logger, method, endpoint, status, duration_ms, current, sampled, fields
            ):
                extra: dict[str, Any] = {} if sampled is None else {"trace_sampled": sampled}
                log_request_complete(
                    logger, method, endpoint, status, duration_ms, current_span=current, **extra
                )
            return
        record = RequestRecord(
            scope, method, endpoint, status, duration, fields["request_id"], first_byte, error,
            unhandled, sampled,
        )  # fmt: skip
        self.hooks.finished(record)
        self.hooks.access_line(record, self.logger)
