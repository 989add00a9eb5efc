"""ASGI middleware that gives every request its id, its metrics and its access log line.

It sits just inside the OpenTelemetry server span (so trace ids are available) and
outside the exception handlers (so it sees the final status of every response,
including 404/405/413 and errors raised before a route runs). An exception nobody
handled is logged here once and answered with a problem+json 500.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_gateway.api.problems import internal_error_response
from inference_gateway.errors import ClientClosedRequestException, InferenceGatewayException
from inference_gateway.observability.logging import (
    InferenceLogFields,
    LogContext,
    log_inference_complete,
    log_request_complete,
    log_request_start,
)
from inference_gateway.observability.metrics import _normalize_endpoint
from inference_gateway.observability.sampling import http_outcome
from inference_gateway.observability.telemetry import Telemetry
from inference_gateway.observability.tracing import (
    CLIENT_CLOSED_REQUEST,
    current_traceparent,
    get_current_trace_id,
)

REQUEST_ID_HEADER = "x-request-id"
#: What the access line says of a request cancelled before its answer.
CANCELLED_DETAIL = "The request was cancelled before its answer: its client went away."
USER_ID_HEADER = "x-user-id"
_SANE_TOKEN = re.compile(r"[A-Za-z0-9._:@\-]{1,128}")


def sanitize_token(value: str | None) -> str | None:
    """Return ``value`` if it is a sane token (≤128 safe characters), else None."""
    if value is not None and _SANE_TOKEN.fullmatch(value):
        return value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class ObservabilityMiddleware:
    """Request id, user id, active requests, RED metrics, access log, trace headers."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        """Wrap ``app``, reporting to ``telemetry``."""
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, measuring it if it is HTTP."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = sanitize_token(_header(scope, b"x-request-id")) or str(uuid.uuid4())
        user_id = sanitize_token(_header(scope, b"x-user-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        method = scope["method"]
        metrics = self.telemetry.metrics
        logger = self.telemetry.logger
        status = 500
        started = False
        unhandled: Exception | None = None
        state = scope["state"]

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                # The answer is known: keep the trace or not, and say so in the header.
                sampled = self._decide(scope, status, time.perf_counter() - start)
                traceparent = current_traceparent(sampled)
                if traceparent is not None:
                    headers["traceparent"] = traceparent
            await send(message)

        if metrics is not None:
            metrics.active_requests.inc()
        with LogContext(request_id=request_id, user_id=user_id, method=method):
            log_request_start(logger, method, scope["path"][:256])
            try:
                await self.app(scope, receive, send_wrapper)
            except asyncio.CancelledError:
                if not started:  # cancelled before any answer: its client went away
                    status = CLIENT_CLOSED_REQUEST
                    state.setdefault("error", ClientClosedRequestException(CANCELLED_DETAIL))
                raise
            except Exception as exc:
                status = 500
                scope["state"]["error"] = exc
                unhandled = exc
                if not started:
                    await internal_error_response(request_id)(scope, receive, send_wrapper)
            finally:
                duration = time.perf_counter() - start
                if "trace_sampled" not in state:  # no answer was sent (the client left)
                    self._decide(scope, status, duration)
                self._finish(scope, method, status, duration, unhandled)

    def _decide(self, scope: Scope, status: int, duration: float) -> bool | None:
        """Tail sampling's ruling on this request's trace (None: no ruling, as under
        head sampling or for an untraced route), remembered in the request's state."""
        tail = self.telemetry.tail
        if tail is None:
            return None
        kept = tail.decide(  # the current span is the server span
            trace.get_current_span(),
            http_outcome(status),
            duration,
            _header(scope, b"traceparent"),
        )
        if kept is not None:
            scope["state"]["trace_sampled"] = kept
        return kept

    def _finish(
        self,
        scope: Scope,
        method: str,
        status: int,
        duration: float,
        unhandled: Exception | None,
    ) -> None:
        """Record the request's metrics and write its one access log line."""
        endpoint = _normalize_endpoint(scope)
        error = scope["state"].get("error")
        sampled = scope["state"].get("trace_sampled")
        metrics = self.telemetry.metrics
        if metrics is not None:
            # An exemplar names a trace only when that trace is exported.
            trace_id = get_current_trace_id() if sampled is not False else None
            metrics.record_request(method, endpoint, status, duration, trace_id)
            if isinstance(error, BaseException):
                metrics.record_error(endpoint, type(error).__name__)
            if isinstance(error, InferenceGatewayException) and error.reject_reason:
                metrics.record_rejection(error.reject_reason)
            metrics.active_requests.dec()
        fields: dict[str, Any] = {}
        if sampled is not None:
            fields["trace_sampled"] = sampled
        key_id = scope["state"].get("api_key_id")  # the key's id, never the key
        if key_id is not None:
            fields["api_key_id"] = key_id
        model = scope["state"].get("model")  # the version a prediction route picked
        if isinstance(model, tuple):
            fields["model_name"], fields["model_version"] = model
        if isinstance(error, BaseException):
            fields["error_type"] = type(error).__name__
            if isinstance(error, InferenceGatewayException):
                fields["error"] = error.detail
        if unhandled is None and isinstance(error, InferenceGatewayException):
            # A server-side failure rendered as a problem: keep its cause's traceback.
            cause = error.__cause__ if not error.expected else None
            unhandled = cause if isinstance(cause, Exception) else None
        elif unhandled is None and isinstance(error, Exception):
            unhandled = error  # a bug a route answered itself (the protocol's own 500)
        inference = scope["state"].get("inference")
        if isinstance(inference, InferenceLogFields) and error is None and status < 400:
            log_inference_complete(
                self.telemetry.logger, inference.model_name, inference.prediction_class,
                inference.confidence, duration * 1000, method=method, endpoint=endpoint,
                status_code=status, inference_ms=inference.inference_ms,
                model_version=inference.model_version,
                batch_size=inference.batch_size,
                **{k: v for k, v in fields.items() if k in ("trace_sampled", "api_key_id")},
            )  # fmt: skip
            return
        expected = isinstance(error, InferenceGatewayException) and error.expected
        log_request_complete(
            self.telemetry.logger, method, endpoint, status, duration * 1000,
            exc_info=unhandled, expected=expected, **fields,
        )  # fmt: skip
