"""What happens below the router, seen: protocol errors counted and logged.

A malformed request, a TLS handshake on the plain port, headers that are too slow, too
large or too many, a body over the limit or too slow: each is counted in
``http_protocol_errors_total{reason}`` (every reason exists at 0 from start-up) and
logged with the peer's address and the reason (a body cut off inside a route is
logged by its request's own access line instead). The log is rate-limited per reason —
at most one line per `LOG_INTERVAL_SECONDS`, the next line saying how many were left
out — so a flood of bad requests cannot flood the log; the counter counts them all.
"""

from __future__ import annotations

import time

from inference_gateway.observability.telemetry import Telemetry

#: Why a request was cut off below the router (the ``reason`` label).
PROTOCOL_ERROR_REASONS: tuple[str, ...] = (
    "malformed",  # the HTTP parser refused it (smuggling shapes, bad chunk sizes, ...)
    "tls_handshake",  # a TLS ClientHello on the plain-HTTP port
    "header_timeout",  # the headers did not arrive within REQUEST_HEADER_TIMEOUT
    "header_too_large",  # request line and headers over MAX_HEADER_BYTES
    "too_many_headers",  # more than MAX_HEADER_COUNT headers
    "body_too_large",  # a body over MAX_BODY_BYTES
    "body_timeout",  # the body did not arrive within REQUEST_BODY_TIMEOUT
    "connection_limit",  # a connection beyond MAX_CONNECTIONS of the worker
)
#: At most one log line per reason this often (seconds).
LOG_INTERVAL_SECONDS = 1.0


class ProtocolErrors:
    """Counts and logs (rate-limited) the requests cut off below the router."""

    def __init__(self, telemetry: Telemetry) -> None:
        """Report to ``telemetry``'s metrics and logger."""
        self._telemetry = telemetry
        self._last_logged: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def rejected(self, reason: str) -> None:
        """Also count a refusal to protect the service (``requests_rejected_total``)."""
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.record_rejection(reason)

    def report(self, reason: str, peer: str | None, detail: str, *, log: bool = True) -> None:
        """One request cut off for ``reason``, from ``peer`` (``host:port``). ``log``
        false: counted only, as a body cut off inside a route, whose request already
        gets its one access line (413, 408)."""
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.record_protocol_error(reason)
        if not log:
            return
        now = time.monotonic()
        last = self._last_logged.get(reason)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            self._left_out[reason] = self._left_out.get(reason, 0) + 1
            return
        self._last_logged[reason] = now
        left_out = self._left_out.pop(reason, 0)
        self._telemetry.logger.warning(
            "Request refused below the router",
            reason=reason,
            client=peer,
            error=detail[:300],
            **({"not_logged_since_last": left_out} if left_out else {}),
        )


class Connections:
    """The worker's open HTTP connections: the ``http_connections_open`` gauge, and
    ``MAX_CONNECTIONS``, beyond which a new connection is refused (503) instead of
    exhausting the process's file descriptors."""

    def __init__(self, telemetry: Telemetry, limit: int) -> None:
        """Count against ``limit`` connections, reporting to ``telemetry``."""
        self._telemetry = telemetry
        self.limit = limit
        self.open = 0  # event loop only

    def opened(self) -> bool:
        """A connection was accepted; False when it is over the limit (and not counted)."""
        if self.open >= self.limit:
            return False
        self.open += 1
        self._publish()
        return True

    def closed(self) -> None:
        """A counted connection was closed."""
        self.open -= 1
        self._publish()

    def _publish(self) -> None:
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.http_connections_open.set(self.open)
