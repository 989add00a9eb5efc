"""Request body limits enforced while the body streams in, not after buffering it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_gateway.errors import PayloadTooLargeException


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, counting bytes as they arrive.

    A declared ``Content-Length`` over the limit is refused before any byte is read;
    a chunked body is cut off at the first chunk that crosses it. The exception is
    raised from ``receive`` inside the route, so the error handlers render it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app`` with a limit of ``max_bytes`` per request body."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise PayloadTooLargeException(
                    f"The body declares {declared} bytes; at most {limit} are accepted."
                )
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeException(f"The body exceeds {limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
