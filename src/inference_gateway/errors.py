"""Exception hierarchy and its one rendering: RFC 9457 ``application/problem+json``.

Code anywhere raises one of these exceptions; `install_error_handlers` turns them, and
FastAPI's own 404/405/422, into problem documents carrying the request id. Nothing
about the server's internals (stack traces, paths, exception text of unexpected
errors) ever reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:inference-gateway:problem:"


class InferenceGatewayException(Exception):  # noqa: N818 - the specification's name
    """Base of every error the gateway reports to a client.

    Subclasses fix the HTTP status, a stable problem ``type`` slug and a title; the
    instance carries a human-readable ``detail``. ``reject_reason`` (a bounded value)
    is set for refusals the service makes to protect itself, so they are counted as
    overload, not as failures.
    """

    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    reject_reason: ClassVar[str | None] = None
    retry_after_seconds: ClassVar[int | None] = None
    close_connection: ClassVar[bool] = False  # answer with ``Connection: close``

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.title
        super().__init__(self.detail)

    @property
    def expected(self) -> bool:
        """A client error or a refusal (shedding, deadline): part of normal operation,
        logged at WARNING and recorded on spans without a stack trace."""
        return self.status_code < 500 or self.reject_reason is not None

    @property
    def problem_type(self) -> str:
        """The RFC 9457 ``type`` URI of this problem."""
        return PROBLEM_TYPE_PREFIX + self.slug


class ModelNotLoadedException(InferenceGatewayException):
    """The model is not loaded and warmed yet (or the service is draining)."""

    status_code = 503
    slug = "model-not-ready"
    title = "Model not ready"
    reject_reason = "not_ready"
    retry_after_seconds = 5


class InvalidInputException(InferenceGatewayException):
    """The request is well-formed HTTP but its content cannot be used."""

    status_code = 400
    slug = "invalid-input"
    title = "Invalid input"


class InvalidImageException(InvalidInputException):
    """The payload is not a decodable image; ``reason`` is a bounded metric label."""

    slug = "invalid-image"
    title = "Invalid image"

    def __init__(self, detail: str, reason: str) -> None:
        self.reason = reason
        super().__init__(detail)


class ImageTooLargeException(InvalidImageException):
    """The image's dimensions exceed the configured pixel or side limits."""

    slug = "image-too-large"
    title = "Image too large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason="too_large")


class ModelStalledException(InferenceGatewayException):
    """A forward pass has run for longer than ``MODEL_STALL_SECONDS`` (``/ready`` only)."""

    status_code = 503
    slug = "model-stalled"
    title = "Model stalled"
    reject_reason = "model_stalled"
    retry_after_seconds = 5


class RequestTimeoutException(InferenceGatewayException):
    """The request body did not arrive within ``REQUEST_BODY_TIMEOUT`` (a slow client)."""

    status_code = 408
    slug = "request-timeout"
    title = "Request timeout"
    close_connection = True


class InferenceTimeoutException(InferenceGatewayException):
    """The request's deadline passed before its prediction was ready."""

    status_code = 504
    slug = "timeout"
    title = "Inference timed out"
    reject_reason = "deadline_exceeded"


class QueueFullException(InferenceGatewayException):
    """The inference queue is full; the request was refused without waiting."""

    status_code = 503
    slug = "queue-full"
    title = "Inference queue full"
    reject_reason = "queue_full"
    retry_after_seconds = 1


class DeadlineUnreachableException(InferenceGatewayException):
    """The queue ahead would outlast the request's deadline; refused without waiting."""

    status_code = 503
    slug = "deadline-unreachable"
    title = "Deadline cannot be met"
    reject_reason = "deadline_unreachable"
    retry_after_seconds = 1


class ServiceDrainingException(InferenceGatewayException):
    """The service is shutting down and takes no new work."""

    status_code = 503
    slug = "draining"
    title = "Service shutting down"
    reject_reason = "draining"
    retry_after_seconds = 1


class InflightBytesException(InferenceGatewayException):
    """Uploads in memory already reach ``MAX_INFLIGHT_BYTES``."""

    status_code = 503
    slug = "memory-pressure"
    title = "Too many uploads in memory"
    reject_reason = "inflight_bytes"
    retry_after_seconds = 1


class ClientClosedRequestException(InferenceGatewayException):
    """The client went away before its answer was ready (nginx's 499)."""

    status_code = 499
    slug = "client-closed-request"
    title = "Client closed request"


class ModelInferenceException(InferenceGatewayException):
    """The forward pass failed."""

    status_code = 500
    slug = "inference-failed"
    title = "Inference failed"


class PayloadTooLargeException(InferenceGatewayException):
    """The request body is larger than ``MAX_BODY_BYTES``."""

    status_code = 413
    slug = "payload-too-large"
    title = "Payload too large"
    reject_reason = "payload_too_large"
    close_connection = True  # do not read the rest of an upload we refused


class UnsupportedMediaTypeException(InferenceGatewayException):
    """The declared content type is not one the endpoint accepts."""

    status_code = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Build one RFC 9457 problem document response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_CONTENT_TYPE
    )


def request_id_of(request: Request) -> str | None:
    """The request id the observability middleware stored for this request, if any."""
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def gateway_exception_response(
    exc: InferenceGatewayException, request_id: str | None
) -> JSONResponse:
    """Render a gateway exception; refusals carry ``reason`` and ``Retry-After``."""
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    if exc.close_connection:
        headers["Connection"] = "close"
    if exc.reject_reason is not None:
        extra["reason"] = exc.reject_reason
    return problem_response(
        status=exc.status_code,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        request_id=request_id,
        headers=headers,
        extra=extra,
    )


def internal_error_response(request_id: str | None) -> JSONResponse:
    """The 500 answer for an unexpected exception: no internals, just the request id."""
    return gateway_exception_response(
        InferenceGatewayException("An unexpected error occurred; quote the request_id."),
        request_id,
    )


def gateway_exception_names() -> list[str]:
    """Class names of every gateway exception (the bounded ``exception_type`` values)."""
    found: list[str] = []
    pending: list[type[InferenceGatewayException]] = [InferenceGatewayException]
    while pending:
        cls = pending.pop()
        found.append(cls.__name__)
        pending.extend(cls.__subclasses__())
    return sorted(found)


_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed"}


async def _gateway_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InferenceGatewayException)  # noqa: S101 - registered for this type
    request.scope.setdefault("state", {})["error"] = exc
    return gateway_exception_response(exc, request_id_of(request))


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
    return problem_response(
        status=status,
        slug=_HTTP_SLUGS.get(status, f"http-{status}"),
        title=phrase,
        detail=detail,
        request_id=request_id_of(request),
        headers=exc.headers,
    )


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type
    errors = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(
        status=422,
        slug="validation-error",
        title="Request validation failed",
        detail=summary or "Request validation failed",
        request_id=request_id_of(request),
        extra={"errors": errors},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``: the one place errors are rendered."""
    app.add_exception_handler(InferenceGatewayException, _gateway_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
