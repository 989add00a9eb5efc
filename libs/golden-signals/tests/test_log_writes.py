"""On the loop of a server that runs an instrumented app's lifespan, access lines to a
file, a pipe or a socket wait as their values and are formatted and written together
(once `DEFERRED_LINES` wait, or about `LINGER_SECONDS` after the first): one system call
for several, in order with every other line, never more than a pipe writes in one
piece, written at the app's shutdown and at exit, none written twice by a forked child.
Anywhere else (a test client's short-lived loop, a script's) each is written at once."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import structlog
from opentelemetry import trace

from golden_signals.logs import (
    DEFERRED_LINES,
    LINGER_SECONDS,
    REQUEST_FIELDS,
    configured_logger,
    get_logger,
    reset_logging,
    serving_ended,
    serving_on,
    setup_logging,
    write_request_line,
)


class _Descriptor(io.StringIO):
    """A stream with a file descriptor (a temporary file's) that keeps each write."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.writes: list[str] = []
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


@pytest.fixture
def stream() -> Iterator[_Descriptor]:
    with tempfile.TemporaryFile() as file:
        yield _Descriptor(file.fileno())
    reset_logging()


def _answer(status: int = 200, endpoint: str = "/a") -> None:
    fields = {"request_id": "r", "method": "GET"}
    token = REQUEST_FIELDS.set(fields)
    try:
        logger = configured_logger()
        assert write_request_line(
            logger, "GET", endpoint, status, 1.0, trace.INVALID_SPAN, None, fields
        )
    finally:
        REQUEST_FIELDS.reset(token)


#: Long enough for the lines waiting to have been written (their timer has fired).
_LINGERED = LINGER_SECONDS * 3


def _serving(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a new loop that serves an app (as its lifespan marks it)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        serving_on(loop)
        try:
            await body()
        finally:
            serving_ended(loop)

    asyncio.run(main())


def test_waiting_lines_go_out_in_one_write_in_order_within_the_linger(
    stream: _Descriptor,
) -> None:
    setup_logging("INFO", "json", stream)

    async def serve() -> None:
        _answer()
        _answer(404)
        await asyncio.sleep(0)
        assert stream.writes == []  # waiting for more, or for their time
        await asyncio.sleep(_LINGERED)  # no more requests come: written all the same
        assert len(stream.writes) == 1 and stream.writes[0].count("\n") == 2
        _answer()
        get_logger().info("the app's own line")  # at once, after the waiting one
        assert len(stream.writes) == 3
        _answer(500)  # a failure's line at once
        assert len(stream.writes) == 4

    _serving(serve)
    assert all(text.endswith("\n") for text in stream.writes)
    text = "".join(stream.writes)
    assert [line.split('"status_code":')[1][:3] for line in text.splitlines() if "status_code" in line] == [
        "200", "404", "200", "500",
    ]  # fmt: skip
    assert text.splitlines()[3].endswith('"message":"the app\'s own line"}')


def test_without_a_running_loop_or_to_memory_a_line_is_written_at_once(
    stream: _Descriptor,
) -> None:
    setup_logging("INFO", "json", stream)
    _answer()
    assert len(stream.writes) == 1
    memory = io.StringIO()
    setup_logging("INFO", "json", memory)

    async def serve() -> None:
        _answer()
        assert memory.getvalue().count("\n") == 1  # a test reads its lines at once

    asyncio.run(serve())


_SCRIPT = """
import asyncio, os, sys
from opentelemetry import trace
from golden_signals.logs import REQUEST_FIELDS, configured_logger, setup_logging, write_request_line
setup_logging("INFO", "json", sys.stdout)
fields = {"request_id": "r", "method": "GET"}

async def serve(path):
    REQUEST_FIELDS.set(fields)
    write_request_line(configured_logger(), "GET", path, 200, 1.0, trace.INVALID_SPAN, None, fields)
    if sys.argv[1] == "exit":
        sys.exit(0)  # before the loop ends its iteration: only the exit writes the line
    if sys.argv[1] == "fork":
        child = os.fork()
        if child == 0:
            sys.exit(0)  # a normal exit: its copy of the waiting line must not be written
        os.waitpid(child, 0)

loop = asyncio.new_event_loop()
loop.run_until_complete(serve("/a"))
loop.run_until_complete(asyncio.sleep(0))
"""


@pytest.mark.parametrize("how", ["exit", "fork"])
def test_a_waiting_line_is_written_once_at_exit_and_never_by_a_forked_child(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, how], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parent,
    )  # fmt: skip
    assert done.stdout.count('"endpoint":"/a"') == 1, done.stdout + done.stderr


def test_structlog_and_the_standard_library_still_write_at_once(stream: _Descriptor) -> None:
    setup_logging("INFO", "json", stream)

    async def serve() -> None:
        structlog.get_logger().info("structlog's")
        import logging

        logging.getLogger("lib").warning("the standard library's")
        assert len(stream.writes) == 2

    asyncio.run(serve())


def test_a_full_batch_is_written_at_once(stream: _Descriptor) -> None:
    setup_logging("INFO", "json", stream)

    async def serve() -> None:
        for _ in range(DEFERRED_LINES - 1):
            _answer()
        assert stream.writes == []
        _answer()  # the batch is full: written now, not at its time
        assert len(stream.writes) == 1 and stream.writes[0].count("\n") == DEFERRED_LINES

    _serving(serve)


def test_a_batch_is_at_most_what_a_pipe_writes_in_one_piece(stream: _Descriptor) -> None:
    """The workers of a server share one stdout pipe: a write longer than ``PIPE_BUF``
    may be split by another worker's, mid-line. A batch never is: lines too long to
    go together in one go in several writes, each whole lines."""
    import select

    setup_logging("INFO", "json", stream)
    long_route = "/" + "é" * 700  # about 1,800 bytes a line, written in UTF-8

    async def serve() -> None:
        for _ in range(DEFERRED_LINES * 2):
            _answer(endpoint=long_route)
        for _ in range(5):
            _answer()
        get_logger().info("x" * 1000)  # written after the waiting lines, not with them

    _serving(serve)
    assert len(stream.writes) > 5
    assert all(len(text.encode()) <= select.PIPE_BUF for text in stream.writes[:-1])
    assert all(text.endswith("\n") for text in stream.writes)
    assert sum(text.count("\n") for text in stream.writes) == DEFERRED_LINES * 2 + 6
    assert stream.writes[-1].count("\n") == 1 and "x" * 1000 in stream.writes[-1]


def test_every_configuration_of_a_stream_shares_its_waiting_lines(stream: _Descriptor) -> None:
    """A logger of an earlier configuration of the same stream writes after the lines
    waiting there, as every line does."""
    setup_logging("INFO", "json", stream)
    earlier = get_logger()
    earlier_logger = configured_logger()
    setup_logging("INFO", "json", stream)

    async def serve() -> None:
        fields = {"request_id": "r", "method": "GET"}
        token = REQUEST_FIELDS.set(fields)
        try:
            span = trace.INVALID_SPAN
            assert write_request_line(earlier_logger, "GET", "/first", 200, 1.0, span, None, fields)
        finally:
            REQUEST_FIELDS.reset(token)
        earlier.info("second")

    _serving(serve)
    text = "".join(stream.writes)
    assert text.index("/first") < text.index('"second"')


def test_lines_waiting_on_another_loop_are_written_before_this_loops(
    stream: _Descriptor,
) -> None:
    """A loop stopped with a line waiting (its callback never run), then another loop's
    line: the waiting one first, each once."""
    setup_logging("INFO", "json", stream)
    first = asyncio.new_event_loop()
    serving_on(first)

    def answer_first() -> None:
        _answer(200)

    first.call_soon(answer_first)
    first.call_soon(first.stop)  # stopped before the line's timer
    first.run_forever()
    assert stream.writes == []

    async def second() -> None:
        _answer(404)
        await asyncio.sleep(_LINGERED)

    _serving(second)
    serving_ended(first)
    first.close()
    assert [text.count("\n") for text in stream.writes] == [1, 1]
    assert '"status_code":200' in stream.writes[0] and '"status_code":404' in stream.writes[1]


_LOCKED_AT_FORK = """
import os, sys, threading
from golden_signals.logs import _writer_of, get_logger, setup_logging
setup_logging("INFO", "json", sys.stdout)
held, release = threading.Event(), threading.Event()

def hold():
    with _writer_of(sys.stdout)._lock:  # as a thread blocked writing to a full pipe
        held.set()
        release.wait()

threading.Thread(target=hold, daemon=True).start()
held.wait()
child = os.fork()
if child == 0:
    get_logger().info("from the child")
    os._exit(0)
release.set()
_, status = os.waitpid(child, 0)
print("child exited", status)
"""


def test_a_forked_child_logs_though_a_thread_held_the_writer_at_the_fork() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOCKED_AT_FORK], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert "from the child" in done.stdout and "child exited 0" in done.stdout


def test_on_a_loop_that_serves_no_app_each_line_is_written_at_once(stream: _Descriptor) -> None:
    """A test client without ``with`` (no lifespan) runs each request on a loop of its
    own that ends with it: nothing would write a line left waiting there."""
    setup_logging("INFO", "json", stream)

    async def request() -> None:
        _answer()
        assert len(stream.writes) == 1

    asyncio.run(request())


def test_an_apps_shutdown_writes_the_lines_waiting(stream: _Descriptor) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from golden_signals import instrument, logs

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello)])
    instrument(app, log_stream=stream, tracing=False, include_registry=None)
    with TestClient(app) as client:  # its lifespan: the portal's loop serves the app
        for _ in range(3):
            assert client.get("/hello").status_code == 200
        assert logs._SERVING  # the lines may wait
    assert not logs._SERVING
    lines = "".join(stream.writes).splitlines()
    assert sum('"endpoint":"/hello"' in line for line in lines) == 3


def test_loops_taking_turns_each_have_one_timer(stream: _Descriptor) -> None:
    """Lines of two serving loops in turn: each loop's are written before the other's,
    and each loop has at most one timer waiting, however many turns."""
    setup_logging("INFO", "json", stream)
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    timers = {id(loop): 0 for loop in loops}
    for loop in loops:
        serving_on(loop)
        call_later = loop.call_later

        def counted(delay: float, *args: object, _loop: object = loop, _call: object = call_later,
                    **kwargs: object) -> object:  # fmt: skip
            timers[id(_loop)] += 1
            return _call(delay, *args, **kwargs)  # type: ignore[operator]

        loop.call_later = counted  # type: ignore[method-assign]

    async def answer() -> None:
        _answer()

    try:
        for turn in range(20):
            loops[turn % 2].run_until_complete(answer())
        assert timers == {id(loop): 1 for loop in loops}
        assert sum(text.count("\n") for text in stream.writes) == 19  # the last one waits
    finally:
        for loop in loops:
            serving_ended(loop)
            loop.close()
    assert sum(text.count("\n") for text in stream.writes) == 20


def test_a_line_that_cannot_be_formatted_loses_only_itself(
    stream: _Descriptor, capsys: pytest.CaptureFixture[str]
) -> None:
    from golden_signals.logs import _writer_of

    setup_logging("INFO", "json", stream)
    writer = _writer_of(stream)

    async def serve() -> None:
        _answer()
        writer.defer(("bad",))  # type: ignore[arg-type]
        _answer(404)

    _serving(serve)
    text = "".join(stream.writes)
    assert text.count("\n") == 2 and '"status_code":404' in text
    assert "cannot write log lines" in capsys.readouterr().err
