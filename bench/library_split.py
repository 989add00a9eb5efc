"""Where an instrumented server's time per request goes: the instrumentation's own code,
the app and framework around and inside it, uvicorn's ``send``, and the rest of the
server.

`bench.library_server --split` starts every server with ``LIBRARY_SPLIT=1``:
`bench.library_app` then calls `install` before it builds its app, and the server
keeps clocks (``time.perf_counter_ns``, elapsed time) of its HTTP requests, read and
reset at ``GET /__split`` before and after every turn:

- **whole**: FastAPI's ``__call__``, as uvicorn calls the app;
- **server send**: uvicorn's ``send``, each call;
- **layer**: the instrumentation's own layer (`golden_signals.instrument`'s outermost
  one, the instrumentator's middleware, OpenTelemetry's ASGI middleware), and the
  ``send`` the framework hands it (**given send**);
- **inner**: the app that layer calls, and the ``send`` the layer hands it (**wrapped
  send**).

A request's **own** time (the instrumentation's code) is layer − inner + wrapped send −
given send; **app** is whole − own − server send: FastAPI and Starlette's layers
wherever they sit (the instrumentator's middleware sits inside three of them, ours and
OpenTelemetry's outside; OpenTelemetry adds two of its own inside, counted here as app)
and the route. Bare, there is no layer: own is 0 and app is whole − server send. `rest`
(`bench.library_server`) is the event loop thread's CPU less whole: parsing, the loop,
writing; the other threads' CPU (span export) is apart.

The clocks assume one worker and one event loop (their sums are not guarded against
threads) and a request that runs without yielding to another one (true of the bench's
``GET /items/7``: nothing in it waits); each costs the same in every server, so the
differences from the bare server are each part's added time.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from bench.http_bench import RunningServer
from golden_signals.asgi import ASGIApp, Message, Receive, Scope, Send

#: The path a split server answers with its clocks (and resets them).
PATH = "/__split"
#: Nanoseconds summed over requests, and how many calls each clock timed.
CLOCKS = ("whole", "server_send", "layer", "given_send", "inner", "wrapped_send")
_totals: dict[str, int] = {}


def _reset() -> None:
    for clock in CLOCKS:
        _totals[clock] = _totals[f"{clock}_calls"] = 0


_reset()


async def _timed(clock: str, call: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Call and await ``call(*args)``, its time added to ``clock``: from the call on (a
    layer such as `instrument`'s outermost one does its first work before it returns
    what is awaited)."""
    start = time.perf_counter_ns()
    try:
        await call(*args)
    finally:
        _totals[clock] += time.perf_counter_ns() - start
        _totals[f"{clock}_calls"] += 1


def _timed_send(send: Send, clock: str) -> Send:
    """``send``, its calls timed by ``clock``."""

    def timed(message: Message) -> Awaitable[None]:
        return _timed(clock, send, message)

    return timed


def _http_timed(
    clock: str, send_clock: str, call: Callable[..., Awaitable[None]], *head: Any,
    scope: Scope, receive: Receive, send: Send,
) -> Awaitable[None]:  # fmt: skip
    """``call(*head, scope, receive, send)``: for an HTTP request timed by ``clock``, the
    ``send`` it is handed timed by ``send_clock``; anything else (a lifespan) as it is."""
    if scope["type"] != "http":
        return call(*head, scope, receive, send)
    return _timed(clock, call, *head, scope, receive, _timed_send(send, send_clock))


class _Inner:
    """The app the instrumentation's layer calls, timed (the ``send`` it is handed too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    # Coroutine functions, here and below, as asgiref tells an ASGI 3 app by them
    # (OpenTelemetry's middleware asks it).
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _http_timed(
            "inner", "wrapped_send", self.app, scope=scope, receive=receive, send=send
        )


def _time_calls(layer: type[Any]) -> None:
    """Time ``layer``'s calls (clock ``layer``, and the ``send`` it is given)."""
    call = layer.__call__

    async def timed_call(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        await _http_timed(
            "layer", "given_send", call, self, scope=scope, receive=receive, send=send
        )

    layer.__call__ = timed_call


def _time_app_of(layer: type[Any]) -> None:
    """Time the app ``layer`` is made with (`_Inner`): its constructor's first argument."""
    init = layer.__init__

    def timed_init(self: Any, app: ASGIApp, *args: Any, **kwargs: Any) -> None:
        init(self, _Inner(app), *args, **kwargs)

    layer.__init__ = timed_init


def _layers(variant: str) -> tuple[type[Any], type[Any]] | None:
    """The classes of ``variant``'s instrumentation: the layer a request enters, and the
    one made with the app it calls (the same class but for ours: `instrument`'s
    outermost layer, which hands the request to the middleware made with the app);
    None for bare."""
    if variant == "instrumentator":
        from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware

        return PrometheusInstrumentatorMiddleware, PrometheusInstrumentatorMiddleware
    if variant == "opentelemetry":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware, OpenTelemetryMiddleware
    if variant.startswith("golden-signals"):
        from golden_signals.instrument import _Outer
        from golden_signals.middleware import ObservabilityMiddleware

        return _Outer, ObservabilityMiddleware
    return None


_installed: list[str] = []


def install(variant: str) -> None:
    """Keep the clocks in this process, before ``variant``'s app is built (a name of
    `bench.library_app.VARIANTS`; once per process)."""
    if _installed:
        raise RuntimeError(f"the clocks are installed already (for {_installed[0]!r})")
    _installed.append(variant)
    from fastapi import FastAPI

    call = FastAPI.__call__

    # A coroutine function, as a server tells an ASGI 3 app by it.
    async def whole(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH:
            await _answer_clocks(send)
        else:
            await _http_timed(
                "whole", "server_send", call, self, scope=scope, receive=receive, send=send
            )

    FastAPI.__call__ = whole  # type: ignore[method-assign]
    layers = _layers(variant)
    if layers is not None:
        entered, made_with_app = layers
        _time_calls(entered)
        _time_app_of(made_with_app)


async def _answer_clocks(send: Send) -> None:
    body = json.dumps(_totals).encode()
    _reset()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def parts(totals: dict[str, int]) -> dict[str, float]:
    """Per request, in µs, from the clocks' totals: ``own``, ``app``, ``send`` and
    ``whole`` (``requests``: how many)."""
    requests = max(totals["whole_calls"], 1)
    own = totals["layer"] - totals["inner"] + totals["wrapped_send"] - totals["given_send"]
    return {
        "own_us": own / requests / 1000,
        "app_us": (totals["whole"] - own - totals["server_send"]) / requests / 1000,
        "send_us": totals["server_send"] / requests / 1000,
        "whole_us": totals["whole"] / requests / 1000,
        "requests": float(totals["whole_calls"]),
    }


def read(running: RunningServer) -> dict[str, float]:
    """The server's clocks since the last read (`parts`), reset."""
    with urllib.request.urlopen(f"{running.url}{PATH}", timeout=10) as answer:  # noqa: S310 - loopback
        totals: dict[str, int] = json.loads(answer.read())
    return parts(totals)
