"""The HTTP rendering of errors: RFC 9457 ``application/problem+json``.

Gateway exceptions say what went wrong (`errors.ErrorKind`); this module decides what
that is in HTTP: the status, ``Retry-After``, whether to close the connection, and
the problem document carrying the request id. `install_error_handlers` registers it,
and renderings of FastAPI's own 404/405/422, on an app: the one place problem+json
is made. Nothing about the server's internals (stack traces, paths, exception text
of unexpected errors) ever reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from inference_gateway.errors import (
    ErrorKind,
    HeaderFieldsTooLargeException,
    InferenceGatewayException,
    PayloadTooLargeException,
    RequestTimeoutException,
    UnsupportedMediaTypeException,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:inference-gateway:problem:"

#: The HTTP status of each kind of failure.
_STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_INPUT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.REFUSED: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.CANCELLED: 499,  # nginx's "client closed request"
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
}

#: Failures HTTP has a status of their own for (looked up along the class's MRO).
_STATUS_BY_TYPE: dict[type[InferenceGatewayException], int] = {
    PayloadTooLargeException: 413,
    HeaderFieldsTooLargeException: 431,
    UnsupportedMediaTypeException: 415,
    RequestTimeoutException: 408,
}

#: Answered with ``Connection: close``: the rest of the upload is never read.
_CLOSES_CONNECTION: tuple[type[InferenceGatewayException], ...] = (
    PayloadTooLargeException,
    RequestTimeoutException,
)


def error_headers(exc: InferenceGatewayException) -> dict[str, str]:
    """``Retry-After`` for a refusal that carries a retry hint, ``WWW-Authenticate`` for
    a missing or wrong credential; no headers otherwise."""
    if exc.kind is ErrorKind.UNAUTHENTICATED:
        return {"WWW-Authenticate": 'Bearer realm="inference-gateway"'}
    if exc.retry_after_seconds is None:
        return {}
    return {"Retry-After": str(exc.retry_after_seconds)}


def http_status(exc: InferenceGatewayException) -> int:
    """The HTTP status that answers ``exc``."""
    for cls in type(exc).__mro__:
        status = _STATUS_BY_TYPE.get(cls)
        if status is not None:
            return status
    return _STATUS_BY_KIND[exc.kind]


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
    headers = error_headers(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, _CLOSES_CONNECTION):
        headers["Connection"] = "close"
    if exc.reject_reason is not None:
        extra["reason"] = exc.reject_reason
    extra.update(exc.extensions)
    return problem_response(
        status=http_status(exc),
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
