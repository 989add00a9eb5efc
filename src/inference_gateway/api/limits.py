"""Request body limits enforced while the body streams in, not after buffering it."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_gateway.api.edge import ProtocolErrors
from inference_gateway.config import Settings
from inference_gateway.errors import (
    InflightBytesException,
    InvalidInputException,
    PayloadTooLargeException,
    RequestTimeoutException,
    UnsupportedMediaTypeException,
)


class InflightBytes:
    """Bytes of request payloads held in memory by this worker, across protocols: HTTP
    bodies as they stream in, gRPC messages while their call runs (``MAX_INFLIGHT_BYTES``).
    Touched only on the event loop."""

    def __init__(self, limit: int) -> None:
        """Allow ``limit`` bytes in all."""
        self.limit = limit
        self.used = 0

    def charge(self, size: int) -> None:
        """Hold ``size`` more bytes (released by `release`, also after a refusal).

        Raises:
            InflightBytesException: The payloads held now exceed the limit.
        """
        self.used += size
        if self.used > self.limit:
            raise InflightBytesException("Uploads held in memory are at the limit; retry shortly.")

    def release(self, size: int) -> None:
        """Give back ``size`` bytes charged before."""
        self.used -= size


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` (413), uploads beyond ``max_inflight_bytes`` (503)
    and bodies that do not arrive within ``body_timeout`` seconds (408).

    A declared ``Content-Length`` over the limit is refused before any byte is read;
    a chunked body is cut off at the first chunk that crosses it. Bytes received are
    also charged to a budget shared by all requests of the app and released when the
    request finishes, so memory held by uploads stays bounded however many clients
    send at once. The whole body must arrive before a deadline set when the headers
    did, so a client trickling bytes cannot hold a request open. The exceptions are
    raised from ``receive`` inside the route, so the error handlers render them.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        inflight: InflightBytes,
        body_timeout: float,
        errors: ProtocolErrors | None = None,
    ) -> None:
        """Wrap ``app`` with a per-request limit, the worker's in-flight budget (shared
        with gRPC) and a body deadline; ``errors`` hears of bodies cut off (too large,
        too slow)."""
        self.app = app
        self.errors = errors
        self.max_bytes = max_bytes
        self.inflight = inflight
        self.body_timeout = body_timeout

    @property
    def inflight_bytes(self) -> int:
        """Bytes of payloads held now, HTTP and gRPC."""
        return self.inflight.used

    def _cut_off(
        self, scope: Scope, exc: PayloadTooLargeException | RequestTimeoutException
    ) -> PayloadTooLargeException | RequestTimeoutException:
        """Report a body cut off below the router; return ``exc`` to raise."""
        if self.errors is not None:
            reason = (
                "body_too_large" if isinstance(exc, PayloadTooLargeException) else "body_timeout"
            )
            self.errors.report(reason, _peer(scope), exc.detail, log=False)
        return exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        encoding = _content_encoding(scope)
        received = 0
        held = 0  # of it, charged to the in-flight budget
        body_done = False
        body_deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, held, body_done
            if body_done:  # later receives only wait for the client to disconnect
                return await receive()
            if encoding is not None:
                raise UnsupportedMediaTypeException(
                    f"The body is sent with Content-Encoding: {encoding[:32]}; the gateway "
                    "does not accept compressed uploads: send it uncompressed (identity)."
                )
            if declared is not None and declared > limit:
                raise self._cut_off(
                    scope,
                    PayloadTooLargeException(
                        f"The body declares {declared} bytes; at most {limit} are accepted."
                    ),
                )
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise self._cut_off(
                    scope,
                    RequestTimeoutException(
                        f"The request body did not arrive within {self.body_timeout:g} s."
                    ),
                ) from None
            if message["type"] == "http.disconnect":
                body_done = True
            elif message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                size = len(message.get("body", b""))
                received += size
                if received > limit:
                    raise self._cut_off(
                        scope, PayloadTooLargeException(f"The body exceeds {limit} bytes.")
                    )
                held += size  # charged even when the charge is refused: released below
                self.inflight.charge(size)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.inflight.release(held)


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _content_encoding(scope: Scope) -> str | None:
    """A ``Content-Encoding`` other than ``identity``, or None."""
    for key, value in scope.get("headers", ()):
        if key == b"content-encoding":
            encoding = str(value.decode("latin-1")).strip()
            if encoding.lower() not in ("", "identity"):
                return encoding
    return None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


#: A client's own deadline for one request, in milliseconds.
TIMEOUT_HEADER = "x-request-timeout-ms"


#: The longest ``X-Request-Timeout-Ms`` taken (about 31 years; anything above
#: ``REQUEST_TIMEOUT`` leaves that limit in force): longer is refused, not converted.
MAX_TIMEOUT_MS = 10**12 - 1


def request_deadline(request: Request, settings: Settings) -> float:
    """The request's deadline as a `time.monotonic` value: ``REQUEST_TIMEOUT``, or the
    client's shorter ``X-Request-Timeout-Ms``.

    Raises:
        InvalidInputException: The header is not a decimal integer from 1 to
            `MAX_TIMEOUT_MS`.
    """
    return deadline_after(request.headers.get(TIMEOUT_HEADER), settings)


def deadline_after(header: str | None, settings: Settings) -> float:
    """`request_deadline` from the ``X-Request-Timeout-Ms`` value ``header`` (None: not
    sent)."""
    timeout = settings.request_timeout
    if header is not None:
        text = header.strip()
        sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
        if not digits.isascii() or not digits.isdecimal():
            raise InvalidInputException(f"{TIMEOUT_HEADER} must be an integer.")
        if sign == "-" or not digits.strip("0"):
            raise InvalidInputException(f"{TIMEOUT_HEADER} must be positive.")
        if len(digits.lstrip("0")) > len(str(MAX_TIMEOUT_MS)):
            raise InvalidInputException(
                f"{TIMEOUT_HEADER} must be at most {MAX_TIMEOUT_MS} (milliseconds)."
            )
        timeout = min(timeout, int(digits) / 1000)
    return time.monotonic() + timeout
