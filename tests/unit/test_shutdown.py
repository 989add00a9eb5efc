"""The stop signal: not ready at once, hand over to the server after the delay (or at a
second signal), refuse what is left when the grace period ends, and put the previous
handlers back."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest
from fastapi.testclient import TestClient

from inference_gateway.shutdown import (
    EXPIRY_MARGIN_SECONDS,
    ShutdownSteps,
    accept_queue_length,
    server_grace_seconds,
    stop_on_signals,
)
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    json_log_capture,
    ready_client,
    wait_until,
)
from tests.images import cat_jpeg

JPEG = {"content-type": "image/jpeg"}

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


class Steps:
    """The gateway's steps of a stop, recorded in the order they ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def steps(self) -> ShutdownSteps:
        return ShutdownSteps(
            stop_ready=lambda: self.ran.append("stop_ready"),
            stop_listening=lambda: self.ran.append("stop_listening"),
            expire=lambda: self.ran.append("expire"),
        )


def test_a_signal_stops_readiness_at_once_then_closes_after_the_delay_then_expires(
    server: Server,
) -> None:
    steps = Steps()

    async def main() -> None:
        restore = stop_on_signals(steps.steps(), delay_seconds=0.05, grace_seconds=0.05)
        try:
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0)  # the handler hands its work to the loop
            assert steps.ran == ["stop_ready"]
            assert not server.stopping.is_set()  # predictions are still served
            await _until(lambda: "expire" in steps.ran, "the grace period to end")
        finally:
            restore()

    asyncio.run(main())
    assert steps.ran == ["stop_ready", "stop_listening", "expire"]
    assert server.signals == [signal.SIGTERM]


def test_the_server_waits_out_the_delay_unless_a_second_signal_comes(server: Server) -> None:
    steps = Steps()
    with json_log_capture() as logs:

        async def main() -> None:
            restore = stop_on_signals(steps.steps(), delay_seconds=FOREVER, grace_seconds=FOREVER)
            try:
                signal.raise_signal(signal.SIGTERM)
                await _until(
                    lambda: "Shutdown signal received" in logs.getvalue(), "the announcement"
                )
                assert steps.ran == ["stop_ready"]
                assert not server.stopping.is_set()  # for the delay
                signal.raise_signal(signal.SIGTERM)  # a second signal: close now
                await _until(server.stopping.is_set, "the server's handler")
                assert server.signals == [signal.SIGTERM]
                assert steps.ran == ["stop_ready", "stop_listening"]  # the grace runs
                signal.raise_signal(signal.SIGINT)  # a third goes to uvicorn (force exit)
                await _until(lambda: len(server.signals) == 2, "the server's second signal")
                assert server.signals == [signal.SIGTERM, signal.SIGINT]
            finally:
                restore()

        asyncio.run(main())
    assert signal.getsignal(signal.SIGTERM) == server.handle_exit  # put back


def test_without_a_delay_the_listener_closes_at_the_signal(server: Server) -> None:
    steps = Steps()

    async def main() -> None:
        restore = stop_on_signals(steps.steps(), delay_seconds=0, grace_seconds=FOREVER)
        try:
            signal.raise_signal(signal.SIGINT)
            await _until(server.stopping.is_set, "the server's handler")
        finally:
            restore()

    asyncio.run(main())
    assert steps.ran == ["stop_ready", "stop_listening"]
    assert server.signals == [signal.SIGINT]


def test_uvicorn_waits_a_little_past_the_grace_period() -> None:
    assert server_grace_seconds(20) == 20 + EXPIRY_MARGIN_SECONDS
    assert server_grace_seconds(0.5) == 1 + EXPIRY_MARGIN_SECONDS


def test_off_the_main_thread_nothing_is_installed(server: Server) -> None:
    installed: list[object] = []

    def worker() -> None:
        async def main() -> None:
            stop_on_signals(Steps().steps(), delay_seconds=0, grace_seconds=1)()

        asyncio.run(main())
        installed.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert installed == [server.handle_exit]


def test_the_accept_queue_length_is_read_from_the_kernel() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        assert accept_queue_length([listener]) == 0
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        try:
            wait_until(lambda: accept_queue_length([listener]) == 3, what="three queued")
            accepted = [listener.accept()[0] for _ in range(3)]
            assert accept_queue_length([listener]) == 0
            for sock in accepted:
                sock.close()
        finally:
            for sock in clients:
                sock.close()


def test_a_stop_keeps_serving_until_the_grace_period_ends_then_refuses_what_waits() -> None:
    """The registry's side of a stop: `begin_shutdown` turns /ready 503 and serves on;
    `expire` answers what still waits for the model 503 draining while the forward
    pass already running answers normally."""
    backend = ControlledBackend()
    app = controlled_app(backend, model_warmup=False, max_batch_size=1, request_timeout=60)
    with TestClient(app) as client:
        ready_client(client)
        registry = app.state.registry
        client.portal.call(registry.begin_shutdown)  # type: ignore[union-attr]
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["type"].endswith(":draining")
        assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 200

        backend.release.clear()
        backend.entered.clear()
        statuses: list[int] = []

        def predict() -> None:
            response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=predict) for _ in range(3)]
        for thread in threads:
            thread.start()
        assert backend.entered.wait(30)  # one runs, two wait in the queue
        batcher = registry.resolve().batcher
        wait_until(lambda: batcher.pending == 3, what="one request running and two queued")
        client.portal.call(registry.expire)  # type: ignore[union-attr]
        backend.release.set()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(statuses) == [200, 503, 503]
        assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 503
