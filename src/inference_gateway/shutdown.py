"""Graceful stop: on SIGTERM the service refuses new work at once, then uvicorn drains.

uvicorn handles SIGTERM/SIGINT by closing its listener (within ~0.1 s), letting
in-flight requests finish for up to ``GRACEFUL_SHUTDOWN_SECONDS`` and then running the
app's shutdown. The app only learns about it at that last step, so until then
``/ready`` would still say 200. `drain_on_signals` chains a handler in front of
uvicorn's: the moment the signal arrives the host starts draining (``/ready`` and new
predictions answer 503 ``draining``), and uvicorn's own handler runs after
``delay_seconds``, the time load balancers need to see ``/ready`` fail and stop
routing here. A second signal skips the delay.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from inference_gateway.observability.logging import get_logger

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def drain_on_signals(begin_drain: Callable[[], None], delay_seconds: float) -> Callable[[], None]:
    """Install the chained handlers; returns a function that puts the previous back.

    Does nothing outside the main thread (where Python cannot install handlers, as
    under a test client), or where no handler of the server's is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    signalled = False

    def announce(signum: int) -> None:
        get_logger().info(
            "Shutdown signal received; draining",
            signal=signal.Signals(signum).name,
            shutdown_delay_seconds=delay_seconds,
        )

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        first = not signalled
        signalled = True
        begin_drain()
        server_handler = previous.get(signum)
        if not callable(server_handler):
            return
        if first:
            loop.call_soon_threadsafe(announce, signum)
        if first and delay_seconds > 0:
            loop.call_soon_threadsafe(loop.call_later, delay_seconds, server_handler, signum, None)
        else:
            server_handler(signum, frame)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore
