"""Graceful stop: on SIGTERM every request the server has received gets its answer.

uvicorn handles SIGTERM/SIGINT by closing its listener and its idle keep-alive
connections, letting the requests it has received finish for up to its
``timeout_graceful_shutdown``, then running the app's shutdown. `stop_on_signals`
chains a handler in front of uvicorn's and runs the gateway's own steps around it:

1. At the signal, `ShutdownSteps.stop_ready`: ``/ready`` answers 503 at once so load
   balancers stop sending, while predictions keep being served normally for
   ``SHUTDOWN_DELAY_SECONDS`` (endpoints and balancers take seconds to notice; a
   request that still arrives then is a normal request).
2. After the delay, once the connections already waiting in the listening socket's
   accept queue are taken (at most `BACKLOG_WAIT_SECONDS`: a client that connected
   before the close is a received request, which closing the socket would reset),
   uvicorn's own handler (the listener closes; every request whose headers have
   arrived completes) and `ShutdownSteps.stop_listening` (the gRPC service stops
   taking calls; calls in flight complete).
3. ``GRACEFUL_SHUTDOWN_SECONDS`` later, `ShutdownSteps.expire`: what the grace period
   could not finish is answered 503 ``draining`` (uvicorn's own timeout is set a little
   longer, `EXPIRY_MARGIN_SECONDS`, so those answers go out before it cancels anything).

A second signal skips what is left of the delay; one more goes to uvicorn, for which a
second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from golden_signals.logs import get_logger
from inference_gateway.config import Settings

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: uvicorn's graceful timeout runs this much past the grace period: time for the 503s of
#: what the grace period could not finish to be written.
EXPIRY_MARGIN_SECONDS = 2
#: The longest the listener stays open after the delay for connections already queued.
BACKLOG_WAIT_SECONDS = 2.0
#: ``struct tcp_info``: where Linux reports a listening socket's accept queue length
#: (``tcpi_unacked``), and how much of the structure to read.
_TCPI_UNACKED_OFFSET = 24
_TCP_INFO_BYTES = 104


def accept_queue_length(sockets: Iterable[Any]) -> int:
    """Connections the kernel has completed and the server has not accepted yet, on
    these listening sockets (0 where the platform does not say)."""
    option = getattr(socket, "TCP_INFO", None)
    total = 0
    for sock in sockets:
        if option is None:
            return 0
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_BYTES)
        except OSError:
            continue
        if len(info) >= _TCPI_UNACKED_OFFSET + 4:
            total += struct.unpack_from("I", info, _TCPI_UNACKED_OFFSET)[0]
    return total


def _listening_sockets(server_handler: Any) -> list[Any]:
    """uvicorn's listening sockets, from the server whose ``handle_exit`` this is."""
    servers = getattr(getattr(server_handler, "__self__", None), "servers", None) or []
    return [sock for server in servers for sock in (getattr(server, "sockets", None) or ())]


async def accept_backlog(server_handler: Any, limit_seconds: float = BACKLOG_WAIT_SECONDS) -> None:
    """Wait (at most ``limit_seconds``) until the connections queued on the server's
    listening sockets have been accepted."""
    sockets = _listening_sockets(server_handler)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    # A kernel counter, read by polling: nothing signals when it falls to 0.
    while sockets and accept_queue_length(sockets) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def longest_stop_seconds(settings: Settings) -> float:
    """The longest a stop can take, SIGTERM to exit: the delay, the accept queue, the
    grace period (HTTP and gRPC share it) with its margin, the span flush. An
    orchestrator's grace (``terminationGracePeriodSeconds``) must exceed it."""
    return (
        settings.shutdown_delay_seconds
        + BACKLOG_WAIT_SECONDS
        + server_grace_seconds(settings.graceful_shutdown_seconds)
        + settings.trace_flush_timeout_seconds
    )


def server_grace_seconds(grace_seconds: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown`` for a grace period of ``grace_seconds``."""
    return math.ceil(grace_seconds) + EXPIRY_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class ShutdownSteps:
    """What the gateway does at each step of a stop (each runs on the event loop)."""

    stop_ready: Callable[[], None]  # at the signal: /ready 503, predictions still served
    stop_listening: Callable[[], None]  # after the delay, with uvicorn's own handler
    expire: Callable[[], None]  # at the end of the grace period: 503 for what is left


def _announce(signum: int, delay_seconds: float, grace_seconds: float) -> None:
    get_logger().info(
        "Shutdown signal received; draining",
        signal=signal.Signals(signum).name,
        shutdown_delay_seconds=delay_seconds,
        graceful_shutdown_seconds=grace_seconds,
    )


def stop_on_signals(
    steps: ShutdownSteps, delay_seconds: float, grace_seconds: float
) -> Callable[[], None]:
    """Install the chained handlers; returns a function that puts the previous back.

    Does nothing outside the main thread (where Python cannot install handlers, as
    under a test client), or where no handler of the server's is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    signalled = False
    closed = False
    delayed: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = set()  # the hand-over, kept alive

    def close(signum: int) -> None:
        """Step 2, on the loop: once the queued connections are in, hand over to
        uvicorn, stop gRPC, arm the expiry."""
        nonlocal closed
        if closed:
            return
        closed = True
        if delayed is not None:
            delayed.cancel()
        tasks.add(loop.create_task(hand_over(signum)))

    async def hand_over(signum: int) -> None:
        server_handler = previous.get(signum)
        await accept_backlog(server_handler)
        get_logger().info("Listeners closing; finishing the requests received")
        if callable(server_handler):
            server_handler(signum, None)
        steps.stop_listening()
        loop.call_later(grace_seconds, expire)

    def expire() -> None:
        get_logger().info("Grace period over; refusing what is left", grace_seconds=grace_seconds)
        steps.expire()

    def first(signum: int) -> None:
        nonlocal delayed
        _announce(signum, delay_seconds, grace_seconds)
        steps.stop_ready()
        if delay_seconds > 0:
            delayed = loop.call_later(delay_seconds, close, signum)
        else:
            close(signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if not callable(previous.get(signum)):
            return
        if not signalled:
            signalled = True
            loop.call_soon_threadsafe(first, signum)
        elif not closed:
            loop.call_soon_threadsafe(close, signum)
        else:  # uvicorn's own: a second Ctrl-C during its drain stops at once
            loop.call_soon_threadsafe(previous[signum], signum, None)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore
