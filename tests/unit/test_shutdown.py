"""The stop signal: drain at once, hand over to the server after the delay or at a second
signal, and put the previous handlers back."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from inference_gateway.shutdown import drain_on_signals
from tests.helpers import json_log_capture, wait_until

#: A delay no test waits out: only a second signal can end it.
FOREVER = 3600.0


class Server:
    """Stands for uvicorn: the handler installed before the gateway's, and what it saw."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.signals: list[int] = []

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.stopping.set()


@pytest.fixture
def server() -> Iterator[Server]:
    """A server handler on SIGTERM and SIGINT for the test; the originals after."""
    stand_in = Server()
    previous = {
        sig: signal.signal(sig, stand_in.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stand_in
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (with `wait_until`'s deadline) while the loop runs on."""
    await asyncio.to_thread(wait_until, condition, what=what)


def test_a_signal_drains_at_once_and_hands_over_to_the_server_after_the_delay(
    server: Server,
) -> None:
    drained = threading.Event()

    async def main() -> None:
        restore = drain_on_signals(drained.set, delay_seconds=0.05)
        try:
            signal.raise_signal(signal.SIGTERM)
            # The handler ran before raise_signal returned; the server's own can only
            # run from the loop, which this coroutine has not given back yet.
            assert drained.is_set()
            assert not server.stopping.is_set()
            await _until(server.stopping.is_set, "the server's handler after the delay")
        finally:
            restore()

    asyncio.run(main())
    assert server.signals == [signal.SIGTERM]


def test_the_server_waits_out_the_delay_unless_a_second_signal_comes(server: Server) -> None:
    drained = threading.Event()
    with json_log_capture() as logs:

        async def main() -> None:
            restore = drain_on_signals(drained.set, delay_seconds=FOREVER)
            try:
                signal.raise_signal(signal.SIGTERM)
                assert drained.is_set()
                # Once the loop has announced the drain (and scheduled the hand-over),
                # the server is still serving: for the delay.
                await _until(
                    lambda: "Shutdown signal received" in logs.getvalue(), "the announcement"
                )
                assert not server.stopping.is_set()
                signal.raise_signal(signal.SIGTERM)  # a second signal: stop now
                assert server.signals == [signal.SIGTERM]
            finally:
                restore()

        asyncio.run(main())
    assert signal.getsignal(signal.SIGTERM) == server.handle_exit  # put back


def test_off_the_main_thread_nothing_is_installed(server: Server) -> None:
    installed: list[object] = []

    def worker() -> None:
        async def main() -> None:
            drain_on_signals(lambda: None, delay_seconds=0)()

        asyncio.run(main())
        installed.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert installed == [server.handle_exit]
