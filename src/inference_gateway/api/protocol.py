"""The HTTP/1.1 connection protocol: uvicorn's httptools one, with a header deadline.

uvicorn closes idle keep-alive connections, but a connection that sends its request
line and headers a byte at a time (slowloris), or sends nothing at all, holds a socket
and a slot for as long as the client likes. `HeaderDeadlineProtocol` gives every
request `header_timeout` seconds from its first byte (or from the connection opening)
to complete its headers, then answers 408 problem+json and closes. The body has its
own deadline in `BodySizeLimitMiddleware`, where the app can answer properly.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inference_gateway.api.problems import gateway_exception_response
from inference_gateway.errors import RequestTimeoutException
from inference_gateway.observability.logging import get_logger


def _timeout_response(header_timeout: float) -> bytes:
    """The raw 408 answer for a request whose headers did not arrive in time."""
    response = gateway_exception_response(
        RequestTimeoutException(f"The request headers did not arrive within {header_timeout:g} s."),
        None,
    )
    head = [b"HTTP/1.1 408 Request Timeout"]
    head += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that cuts off requests whose headers are too slow."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        """``header_timeout``: seconds a request may take to send its headers."""
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._answered = 0  # responses completed on this connection
        self._last_call = False  # a stop came before its first request was read

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock: the first request's headers are due ``header_timeout`` from now."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte (on a kept-alive connection): start its clock."""
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        """The headers are in; the body's deadline is the app's business."""
        self._disarm()
        super().on_headers_complete()
        if self._last_call and self.cycle is not None:
            self.cycle.keep_alive = False  # answer it, then close

    def on_response_complete(self) -> None:
        """Count the answers: a connection that has had one is a kept-alive one."""
        self._answered += 1
        super().on_response_complete()

    def shutdown(self) -> None:
        """A stop: uvicorn closes every connection with no request in progress. One
        accepted just before the stop whose first request is still unread (a busy event
        loop reads late) has a client waiting for an answer: serve that request, then
        close; its header deadline still bounds a client that sends nothing."""
        if self.cycle is None and not self._answered and not self.transport.is_closing():
            self._last_call = True
            return
        super().shutdown()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        get_logger().warning(
            "Request headers timed out",
            client=f"{self.client[0]}:{self.client[1]}" if self.client else None,
            header_timeout_seconds=self.header_timeout,
        )
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_timeout_response(self.header_timeout))
        self.transport.close()


def http_protocol(header_timeout: float) -> functools.partial[HeaderDeadlineProtocol]:
    """The ``http`` argument for uvicorn: the protocol class with its deadline bound."""
    return functools.partial(HeaderDeadlineProtocol, header_timeout=header_timeout)
