"""The HTTP/1.1 connection protocol: uvicorn's httptools one, with a header deadline,
header limits, and every refusal below the router answered, counted and logged.

uvicorn closes idle keep-alive connections, but a connection that sends its request
line and headers a byte at a time (slowloris), or sends nothing at all, holds a socket
and a slot for as long as the client likes. `HeaderDeadlineProtocol` gives every
request `header_timeout` seconds from its first byte (or from the connection opening)
to complete its headers, then answers 408 problem+json and closes. The body has its
own deadline in `BodySizeLimitMiddleware`, where the app can answer properly.

Under overload it also answers at the door, from the headers alone, a prediction the
model's queue would refuse (api/shedding.py), and drops its body as it arrives.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inference_gateway.api.edge import Connections, ProtocolErrors
from inference_gateway.api.problems import gateway_exception_response
from inference_gateway.api.shedding import LoadShedder, RequestHead, raw_response
from inference_gateway.errors import (
    HeaderFieldsTooLargeException,
    InferenceGatewayException,
    MalformedRequestException,
    RequestTimeoutException,
    TooManyConnectionsException,
)

#: The first byte of a TLS record carrying a handshake (a ClientHello).
_TLS_HANDSHAKE = 0x16
#: What ends a request's head.
_HEAD_END = b"\r\n\r\n"


def _raw_problem(exc: InferenceGatewayException) -> bytes:
    """The raw problem+json answer (``Connection: close``) for a refusal made before
    the app runs."""
    response = gateway_exception_response(exc, None)
    named = any(name.lower() == b"connection" for name, _ in response.raw_headers)
    return raw_response(response, after=() if named else [(b"connection", b"close")])


def _app_state(app: Any, name: str) -> Any:
    """``name`` of the gateway app's state, under whatever uvicorn wrapped it in."""
    for _ in range(8):
        found = getattr(getattr(app, "state", None), name, None)
        if found is not None:
            return found
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that cuts off requests whose headers are too slow."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        **kwargs: Any,
    ) -> None:
        """``header_timeout``: seconds a request may take to send its headers;
        ``max_header_bytes``: the most its request line and headers may take together;
        ``max_header_count``: the most headers it may have."""
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self._header_timer: asyncio.TimerHandle | None = None
        self._answered = 0  # responses completed on this connection
        self._last_call = False  # a stop came before its first request was read
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0  # of the head being read
        self._head_tail = b""  # its last bytes, where an end split across reads begins
        self._header_count = 0
        self._refused = False  # answered and closing: read nothing more
        self._first_bytes = True
        self._errors: ProtocolErrors | None = None
        self._connections: Connections | None = None  # counted in it while open
        self._deferred: bytes | None = None  # a refusal waiting for the answer before it
        self._shedder: LoadShedder | None = None
        self._shedding = False  # refused at the door: its body is read and dropped
        self._shed_bytes = 0  # of that body, so far
        self._shed_timer: asyncio.TimerHandle | None = None  # the whole body's deadline

    def _answering(self) -> bool:
        """Whether an earlier request of this connection is still being answered: a
        request pipelined behind it waits, and so does its header clock."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        """Start the head's clock, unless an earlier request is still being answered:
        the server reads no further until then (it pauses reading behind a request in
        progress), so the clock starts when that answer is complete."""
        if self._header_timer is None and not self._answering():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection (refused with 503 beyond ``MAX_CONNECTIONS``) and start the
        clock: the first request's headers are due ``header_timeout`` from now."""
        super().connection_made(transport)
        connections = _app_state(self.app, "connections")
        if isinstance(connections, Connections):
            if not connections.opened():
                self._refuse(
                    "connection_limit",
                    TooManyConnectionsException(
                        f"This worker holds its {connections.limit} connections "
                        "(MAX_CONNECTIONS); retry shortly."
                    ),
                )
                return
            self._connections = connections
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock; the connection no longer counts."""
        self._disarm()
        if self._shed_timer is not None:
            self._shed_timer.cancel()
            self._shed_timer = None
        if self._connections is not None:
            self._connections.closed()
            self._connections = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte (on a kept-alive connection): start its clock, and
        count its head from here (the bytes of the read it began in are not counted:
        the limit is overshot by less than one read at most)."""
        super().on_message_begin()
        self._unset_keepalive_if_required()  # a request after one refused at the door
        self._in_head = True
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting the head's bytes first: beyond ``max_header_bytes``
        the request is refused before the parser buffers any more of it."""
        if self._refused:
            return
        if self._first_bytes:
            self._first_bytes = False
            if data[:1] == bytes([_TLS_HANDSHAKE]):
                self._refuse(
                    "tls_handshake",
                    MalformedRequestException(
                        "This port speaks plain HTTP; the request began a TLS handshake."
                    ),
                )
                return
        if self._in_head:
            window = self._head_tail + data
            end = window.find(_HEAD_END)
            self._head_bytes += (
                len(data) if end < 0 else end + len(_HEAD_END) - len(self._head_tail)
            )
            self._head_tail = window[-(len(_HEAD_END) - 1) :]
            if self._head_bytes > self.max_header_bytes:
                self._refuse(
                    "header_too_large",
                    HeaderFieldsTooLargeException(
                        f"The request line and headers exceed {self.max_header_bytes} bytes."
                    ),
                )
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._shedding:  # its request is answered: no second answer, just close
                self._refused = True
                self.transport.close()
            elif not self._refused:
                self._refuse(
                    "malformed",
                    MalformedRequestException(f"The request is not valid HTTP/1.1: {exc}."),
                )
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def handle_websocket_upgrade(self) -> None:
        """The connection leaves this protocol (only with a WebSocket library enabled;
        ``serve`` runs without): it no longer counts against ``MAX_CONNECTIONS`` here."""
        if self._connections is not None:
            self._connections.closed()
            self._connections = None
        super().handle_websocket_upgrade()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the headers: beyond ``max_header_count`` the request is refused."""
        if self._refused:
            return
        if self._in_head:  # trailers of a chunked body come here too: not headers
            self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refuse(
                "too_many_headers",
                HeaderFieldsTooLargeException(
                    f"The request has more than {self.max_header_count} headers."
                ),
            )
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The headers are in; the body's deadline is the app's business."""
        if self._refused:
            return  # never handed to the app
        self._disarm()
        self._in_head, self._head_bytes, self._head_tail, self._header_count = False, 0, b"", 0
        if self._refused_at_door():
            return
        super().on_headers_complete()
        if self._last_call and self.cycle is not None:
            self.cycle.keep_alive = False  # answer it, then close

    def _refused_at_door(self) -> bool:
        """Answer now, before the app, a prediction the model's queue would refuse
        (`LoadShedder`); its body is then read and dropped. Only for a request first in
        line on a keep-alive HTTP/1.1 connection without ``Expect: 100-continue``."""
        if self._shedder is None:
            found = _app_state(self.app, "shedder")
            self._shedder = found if isinstance(found, LoadShedder) else None
        shedder = self._shedder
        if shedder is None or not shedder.enabled:
            return False
        parser = self.parser
        if (
            self._answering()
            or self.pipeline
            or self._deferred is not None
            or self._last_call
            or self.expect_100_continue
            or self.flow.write_paused  # a client not reading its answers: the app's pace
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return False
        method = parser.get_method()
        if method != b"POST":  # only predictions are refused at the door
            return False
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii")
        if "%" in path:  # as uvicorn decodes it for the scope
            path = urllib.parse.unquote(path)
        head = RequestHead(
            method.decode("ascii"),
            self.root_path + path,
            self.root_path,
            self.headers,
            url.query or b"",
        )
        answer = shedder.refusal(head, self.server_state.default_headers)
        if answer is None:
            return False
        self._shedding, self._shed_bytes = True, 0
        self._answered += 1
        self.transport.write(answer)
        self._keep_alive_timer()  # as after any answer: a client silent that long is closed
        # As the app's body limits: the refused body has REQUEST_BODY_TIMEOUT to end.
        self._shed_timer = self.loop.call_later(shedder.body_timeout, self._close_shed)
        return True

    def _close_shed(self) -> None:
        """The body of a request refused at the door is too large or too slow: close."""
        self._shed_timer = None
        if self._shedding and not self.transport.is_closing():
            self._refused = True
            self.transport.close()

    def _keep_alive_timer(self) -> None:
        """uvicorn's timer between requests: each byte received cancels it."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_body(self, body: bytes) -> None:
        """The body of a request refused at the door is dropped as it comes; a client
        that then stops sending is closed after the keep-alive timeout, and a body over
        ``MAX_BODY_BYTES`` at once."""
        if not self._shedding:
            super().on_body(body)
            return
        self._shed_bytes += len(body)
        if self._shedder is not None and self._shed_bytes > self._shedder.max_body_bytes:
            self._close_shed()
            return
        self._keep_alive_timer()

    def on_message_complete(self) -> None:
        """A request refused at the door is over when its body is: the connection then
        waits for the next one as after any answer (the keep-alive timeout)."""
        if not self._shedding:
            super().on_message_complete()
            return
        self._shedding = False
        if self._shed_timer is not None:
            self._shed_timer.cancel()
            self._shed_timer = None
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self._keep_alive_timer()

    def on_response_complete(self) -> None:
        """Count the answers: a connection that has had one is a kept-alive one. A
        refusal that waited for this answer is sent now (unless a request read before
        it is queued: then after that one's answer); a head begun behind this answer
        gets its clock from now."""
        self._answered += 1
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._deferred is not None:
            if not self.pipeline and not self._answering():
                self.transport.write(self._deferred)
                self.transport.close()
            return
        if self._in_head:  # a pipelined request's head is partly read
            self._arm()

    def _peer(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None

    def _report(self, reason: str, detail: str) -> None:
        if self._errors is None:
            found = _app_state(self.app, "protocol_errors")
            self._errors = found if isinstance(found, ProtocolErrors) else None
        if self._errors is not None:
            self._errors.report(reason, self._peer(), detail)

    def _refuse(self, reason: str, exc: InferenceGatewayException) -> None:
        """Answer ``exc`` as problem+json (when no response has begun), count and log
        it, and close: nothing more of this connection is read."""
        self._refused = True
        self._disarm()
        self._report(reason, exc.detail)
        if exc.reject_reason is not None and self._errors is not None:
            self._errors.rejected(exc.reject_reason)
        cycle = self.cycle
        owed = cycle is not None and not cycle.response_complete and not cycle.more_body
        if owed or self.pipeline:
            # Requests read whole before this one are still owed their answers: refuse
            # after them, rather than close the connection under them. (An error in the
            # body of the request being answered is that request's: closed at once.)
            self._deferred = _raw_problem(exc)
            self.transport.pause_reading()
            return
        self.transport.write(_raw_problem(exc))
        self.transport.close()

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
        if self.transport.is_closing() or self._refused:
            return
        self._refuse(
            "header_timeout",
            RequestTimeoutException(
                f"The request headers did not arrive within {self.header_timeout:g} s."
            ),
        )


def http_protocol(
    header_timeout: float, max_header_bytes: int = 64 * 1024, max_header_count: int = 100
) -> functools.partial[HeaderDeadlineProtocol]:
    """The ``http`` argument for uvicorn: the protocol class with its limits bound."""
    return functools.partial(
        HeaderDeadlineProtocol,
        header_timeout=header_timeout,
        max_header_bytes=max_header_bytes,
        max_header_count=max_header_count,
    )
