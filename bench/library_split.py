"""Where an instrumented server's time per request goes: the instrumentation's own code,
the app inside it, the server's ``send``, and the rest of the server.

`bench.library_server --split` starts every server with ``LIBRARY_SPLIT=1``:
`bench.library_app` then calls `install` before it builds its app, and the server
keeps four clocks (``time.perf_counter_ns``), read and reset at ``GET /__split`` before
and after every turn:

- **outer**: each HTTP request from the server's call of the app to its return
  (Starlette's ``__call__``, outside any instrumentation);
- **inner**: the app inside the instrumentation: the middleware stack FastAPI builds
  (which our `instrument` wraps), or the app the instrumentator's or OpenTelemetry's
  middleware calls (the instrumentator's sits inside the stack, so Starlette's
  ``ServerErrorMiddleware``, about a microsecond, counts as its own);
- **wrapped send**: the ``send`` the instrumentation hands the app, each call;
- **server send**: uvicorn's own ``send``, each call.

A request's **own** time (the instrumentation's code) is outer − inner + wrapped send −
server send; **app** is inner − wrapped send; **send** is the server's send; **rest**
is the server's CPU per request (``/proc``) less outer: parsing, the event loop,
writing. Without instrumentation own is what the clocks themselves cost (about 2 µs).

The four assume a request runs without yielding to another one (true of the bench's
``GET /items/7``: nothing in it waits); rest stays as large as the bare server's when
that holds. The clocks cost the same in every server, so differences from the bare
server are each part's added time: the instrumentation's own code, and what it makes
the app and the server around it spend more (their code and data no longer in the
processor's caches; docs/performance.md).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.http_bench import RunningServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The path a split server answers with its clocks (and resets them).
PATH = "/__split"
#: The clocks, nanoseconds summed over requests, and the requests counted.
_CLOCKS = ("outer", "inner", "wrapped_send", "server_send", "requests")
_totals = dict.fromkeys(_CLOCKS, 0)


def _timed_send(send: Send, clock: str) -> Send:
    """``send``, its calls' time added to ``clock``."""

    async def timed(message: Message) -> None:
        start = time.perf_counter_ns()
        try:
            await send(message)
        finally:
            _totals[clock] += time.perf_counter_ns() - start

    return timed


class _Inner:
    """The app inside the instrumentation, timed (its ``send`` too)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter_ns()
        try:
            await self.app(scope, receive, _timed_send(send, "wrapped_send"))
        finally:
            _totals["inner"] += time.perf_counter_ns() - start


async def _answer_clocks(send: Send) -> None:
    body = json.dumps(_totals).encode()
    for clock in _CLOCKS:
        _totals[clock] = 0
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(variant: str) -> None:
    """Keep the clocks in this process, before ``variant``'s app is built (a name of
    `bench.library_app.VARIANTS`): Starlette's ``__call__`` timed, and answering
    `PATH`; inside, the app the instrumentation wraps timed (`_inner_of`)."""
    from starlette.applications import Starlette

    call = Starlette.__call__

    async def outer(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await call(self, scope, receive, send)
            return
        if scope["path"] == PATH:
            await _answer_clocks(send)
            return
        start = time.perf_counter_ns()
        try:
            await call(self, scope, receive, _timed_send(send, "server_send"))
        finally:
            _totals["outer"] += time.perf_counter_ns() - start
            _totals["requests"] += 1

    Starlette.__call__ = outer  # type: ignore[method-assign]
    _inner_of(variant)


def _inner_of(variant: str) -> None:
    """Time the app inside ``variant``'s instrumentation: the app its middleware class
    is made with (the instrumentator's, OpenTelemetry's), or else the stack FastAPI
    builds (bare, and ours, which wraps that stack)."""
    if variant in ("instrumentator", "opentelemetry"):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware

        middleware: type[Any] = (
            PrometheusInstrumentatorMiddleware
            if variant == "instrumentator"
            else OpenTelemetryMiddleware
        )
        init = middleware.__init__

        def timed_init(self: Any, app: App, *args: Any, **kwargs: Any) -> None:
            init(self, _Inner(app), *args, **kwargs)

        middleware.__init__ = timed_init
        return
    from fastapi import FastAPI

    build = FastAPI.build_middleware_stack

    def built(self: FastAPI) -> Any:
        return _Inner(build(self))

    FastAPI.build_middleware_stack = built  # type: ignore[method-assign]


def read(running: RunningServer) -> dict[str, float]:
    """The server's clocks since the last read, reset: per request, in µs, ``own``,
    ``app``, ``send`` and ``outer`` (``requests``: how many)."""
    with urllib.request.urlopen(f"{running.url}{PATH}", timeout=10) as answer:  # noqa: S310 - loopback
        totals: dict[str, int] = json.loads(answer.read())
    requests = max(totals["requests"], 1)

    def per_request(nanoseconds: int) -> float:
        return nanoseconds / requests / 1000

    return {
        "own_us": per_request(
            totals["outer"] - totals["inner"] + totals["wrapped_send"] - totals["server_send"]
        ),
        "app_us": per_request(totals["inner"] - totals["wrapped_send"]),
        "send_us": per_request(totals["server_send"]),
        "outer_us": per_request(totals["outer"]),
        "requests": float(totals["requests"]),
    }
