"""Refusals answered at the door: under overload, a prediction the model's queue would
refuse is answered by the HTTP protocol as soon as its headers are in, before the app.

At twice the rate it can serve, the gateway refuses about one request for each it
answers. Through the app a refusal cost about 0.4 ms of the event loop in process and
0.75 ms under load (the ASGI task, middleware, routing, dependencies, the access line),
CPU taken from the forward passes on the same cores; at the door it costs a route
match and the admission check the app would make. docs/performance.md has the figures.

What a refusal at the door keeps: the status, headers and body the app would send
(problem+json, or ``{"error"}`` on ``/v2``; ``Retry-After``; ``X-Request-ID``, the
client's if sane), and every metric the app would count (``http_requests_total`` and
``http_request_duration_seconds`` under the route's template,
``http_request_exceptions_total``, ``requests_rejected_total``), so the SLO rules see it
alike. What it does not have: a trace, and an access line of its own — one WARNING line
a second counts them by reason and model. ``TRACE_REFUSED_PER_SECOND`` refusals a
second (a token bucket, as tail sampling's) still go through the app, traced and
logged each, so that examples of them are always kept; with
``TRACE_REFUSED_PER_SECOND=0`` (every refusal traced) the door refuses nothing.

Only the plain case is answered at the door: a ``POST`` to a prediction route with no
query string (the app validates ``top_k`` and ``quality``, and ``/v2``'s ``version``
picks the queue) over HTTP/1.1 keep-alive, no ``Expect: 100-continue``, no CORS
request when CORS is on, nothing earlier on the connection still being answered, the
client reading its answers (no write back-pressure), a valid key when keys are on, a
valid ``X-Request-Timeout-Ms``, a known model version that is ready; a repeated header
is read as the app reads it. Everything else goes to the app, which answers it as
before. The refused body is then read and dropped under the app's limits: the
connection is closed when it passes ``MAX_BODY_BYTES`` or ``REQUEST_BODY_TIMEOUT``, or
when the client stops sending for the keep-alive timeout (api/protocol.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from golden_signals.middleware import request_id_from
from golden_signals.sampling import TokenBucket
from inference_gateway.api.keys import ApiKeys, needs_key
from inference_gateway.api.limits import TIMEOUT_HEADER, deadline_after
from inference_gateway.api.problems import gateway_exception_response
from inference_gateway.api.v2.routes import error_response
from inference_gateway.config import Settings
from inference_gateway.errors import (
    DeadlineUnreachableException,
    InferenceGatewayException,
    QueueFullException,
)
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.logging import log_error
from inference_gateway.observability.telemetry import Telemetry

#: How often the line counting the refusals at the door is written, at most (seconds).
LOG_INTERVAL_SECONDS = 1.0
#: What a prediction path starts with (after ``root_path``): a cheap first filter.
_PREFIXES = ("/predict", "/models/", "/v2/models/")
#: The headers the door reads: of a repeated one, the first value counts (as Starlette's
#: ``headers.get``), but for the keys the last (as the key middleware reads them).
_FIRST_WINS = frozenset({TIMEOUT_HEADER.encode(), b"x-request-id", b"origin"})
_LAST_WINS = frozenset({b"authorization", b"x-api-key"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the door sees of a request: its line and its headers."""

    method: str
    path: str  # the full path, ``root_path`` included
    root_path: str
    headers: Sequence[tuple[bytes, bytes]]  # lower-case names
    query: bytes = b""


@dataclass(frozen=True, slots=True)
class DoorRoute:
    """A prediction route the door may answer for, and the routes the app would try
    before it (any of them matching the request means the app would not reach it)."""

    route: BaseRoute
    template: str
    v2: bool  # answered as the Open Inference Protocol's ``{"error"}``
    earlier: tuple[BaseRoute, ...]


def door_routes(
    routes: Sequence[BaseRoute], predict: Sequence[Any], infer: Sequence[Any]
) -> tuple[DoorRoute, ...]:
    """The routes of ``routes`` whose endpoint is in ``predict`` (problem+json) or
    ``infer`` (``/v2``), each with the routes before it."""
    found = []
    for index, route in enumerate(routes):
        endpoint = getattr(route, "endpoint", None)
        if endpoint in predict or endpoint in infer:
            template = getattr(route, "path", "")
            found.append(DoorRoute(route, template, endpoint in infer, tuple(routes[:index])))
    return tuple(found)


class LoadShedder:
    """Decides, from a request's head, whether to refuse it at the door, and counts and
    logs the refusals it makes as the app would count them."""

    def __init__(
        self,
        routes: Sequence[DoorRoute],
        registry: ModelRegistry,
        settings: Settings,
        telemetry: Telemetry,
        keys: ApiKeys | None,
    ) -> None:
        """Answer for ``routes``, resolved in ``registry``; ``keys``: the API keys, when
        the app requires them."""
        self._routes = routes
        self._registry = registry
        self._settings = settings
        self._telemetry = telemetry
        self._keys = keys
        #: The refusals that still go through the app: TRACE_REFUSED_PER_SECOND a second.
        self.allowance = TokenBucket(settings.trace_refused_per_second)
        self._cors = bool(settings.cors_origins)
        #: The most bytes a refused body may send before the connection is closed, and
        #: the time it may take (MAX_BODY_BYTES, REQUEST_BODY_TIMEOUT, as in the app).
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.request_body_timeout
        self._tally: Counter[tuple[str, str, str]] = Counter()  # not yet logged
        self._flush: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        """Whether the door refuses anything (not when every refusal is to be traced)."""
        return self.allowance.rate > 0

    def refusal(
        self, head: RequestHead, default_headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> bytes | None:
        """The whole HTTP/1.1 response refusing this request at the door, or None: the
        app is to answer it. ``default_headers``: those the server adds to every answer
        (``date``). A request with a query string goes to the app, which validates it
        (and `/v2`'s ``version`` picks the queue). A failure here is logged and leaves
        the request to the app."""
        if head.query:
            return None
        try:
            return self._refusal(head, default_headers)
        except Exception as exc:
            log_error(self._telemetry.logger, "The door's check failed; the app answers", exc)
            return None

    def _refusal(
        self, head: RequestHead, default_headers: Sequence[tuple[bytes, bytes]]
    ) -> bytes | None:
        path = head.path
        started = time.perf_counter()
        matched = self._match(head.method, path, head.root_path)
        if matched is None:
            return None
        door, params, scope = matched
        wanted = _read(head.headers)
        if self._cors and b"origin" in wanted:
            return None  # the CORS middleware's headers belong on the answer
        refused = self._admission(path, params, wanted)
        if refused is None:
            return None
        if any(route.matches(scope)[0] is Match.FULL for route in door.earlier):
            return None  # the app would route it elsewhere
        if self.allowance.take():
            return None  # this second's examples go through the app, traced and logged
        exc, model = refused
        request_id = request_id_from(_text(wanted.get(b"x-request-id")))
        response = error_response(exc) if door.v2 else gateway_exception_response(exc, request_id)
        answer = raw_response(response, default_headers, [(b"x-request-id", request_id.encode())])
        self._record(door.template, exc, model, response.status_code, time.perf_counter() - started)
        return answer

    def _match(
        self, method: str, path: str, root_path: str
    ) -> tuple[DoorRoute, dict[str, Any], dict[str, Any]] | None:
        """The prediction route a ``POST`` is for, its path parameters and the scope
        matched (None for any other request, or when the door is off)."""
        if method != "POST" or not self.enabled:
            return None
        route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        if not route_path.startswith(_PREFIXES):
            return None
        scope = {"type": "http", "path": path, "root_path": root_path, "method": method}
        for door in self._routes:
            match, child = door.route.matches(scope)
            if match is Match.FULL:
                return door, dict(child.get("path_params", {})), scope
        return None

    def _admission(
        self, path: str, params: dict[str, Any], headers: dict[bytes, bytes]
    ) -> tuple[QueueFullException | DeadlineUnreachableException, str] | None:
        """The refusal the app's admission check would make, if any, and the model
        version's ``name:version``; None also whenever the app would answer something
        else first (a missing key, a bad header, an unknown or unready model)."""
        try:
            if self._keys is not None and needs_key(path):
                self._keys.identify(
                    _text(headers.get(b"authorization")), _text(headers.get(b"x-api-key"))
                )
            deadline = deadline_after(_text(headers.get(TIMEOUT_HEADER.encode())), self._settings)
            host = self._registry.resolve(params.get("name"), params.get("version"))
            host.require_ready()
        except InferenceGatewayException:
            return None
        try:
            host.check_admission(deadline)
        except (QueueFullException, DeadlineUnreachableException) as exc:
            return exc, ":".join(host.key)
        except InferenceGatewayException:
            return None
        return None

    def _record(
        self,
        endpoint: str,
        exc: QueueFullException | DeadlineUnreachableException,
        model: str,
        status: int,
        seconds: float,
    ) -> None:
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.record_request("POST", endpoint, status, seconds)
            metrics.record_error(endpoint, type(exc).__name__)
            metrics.record_rejection(str(exc.reject_reason))
        self._tally[(endpoint, model, str(exc.reject_reason))] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                LOG_INTERVAL_SECONDS, self.log_tally
            )

    def log_tally(self) -> None:
        """One line for the refusals at the door since the last one (also called when
        the app stops, so that none goes unlogged)."""
        self._flush = None
        if not self._tally:
            return
        tally, self._tally = self._tally, Counter()
        by_reason: Counter[str] = Counter()
        by_route: Counter[str] = Counter()
        for (endpoint, model, reason), count in tally.items():
            by_reason[reason] += count
            by_route[f"{endpoint} {model}"] += count
        self._telemetry.logger.warning(
            "Requests refused before the app",
            refused=sum(tally.values()),
            by_reason=dict(by_reason),
            by_route=dict(by_route),
        )


def _read(headers: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The headers the door reads, each as the app would read it when repeated."""
    wanted: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _LAST_WINS:
            wanted[name] = value
        elif name in _FIRST_WINS:
            wanted.setdefault(name, value)
    return wanted


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def raw_response(
    response: Response,
    before: Sequence[tuple[bytes, bytes]] = (),
    after: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """``response`` as the bytes of an HTTP/1.1 answer written below the app, with the
    headers ``before`` and ``after`` its own."""
    status = response.status_code
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in (*before, *response.raw_headers, *after)]
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)
