"""Under uvicorn with two workers, and under gunicorn with two uvicorn workers: every
scrape counts every request once, whichever worker answers it, with exemplars, and a
worker that stops takes none of its counts with it. Real processes, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import exemplars, samples, value

HERE = Path(__file__).parent
OPENMETRICS = {"accept": "application/openmetrics-text; version=1.0.0"}
ITEMS = {"method": "GET", "endpoint": "/v1/items/{item_id}", "status": "200"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


#: How each server runs the app with two workers.
COMMANDS = {
    "uvicorn": ["-m", "uvicorn", "shop:app", "--workers", "2", "--host", "127.0.0.1", "--port"],
    "gunicorn": ["-m", "gunicorn", "shop:app", "--workers", "2", "--worker-class",
                 "uvicorn_worker.UvicornWorker", "--bind"],
}  # fmt: skip


class Server:
    """The app under ``runner`` with two workers, its output collected line by line."""

    def __init__(self, directory: Path, runner: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SHOP_INSTRUMENT": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "PYTHONPATH": str(HERE),
        }
        env.pop("OTEL_SDK_DISABLED", None)
        address = str(self.port) if runner == "uvicorn" else f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, *COMMANDS[runner], address],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its workers in its process group, stopped with it
        )  # fmt: skip
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def json_lines(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.output):
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def worker_pids(self) -> set[int]:
        """The pids that wrote an access line."""
        return {
            int(line["pid"])
            for line in self.json_lines()
            if line.get("message") == "Request completed"
        }

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        # A new connection each time: the kernel hands connections to either worker.
        with httpx.Client(base_url=self.url, timeout=10) as client:
            return client.get(path, **kwargs)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        if not self._reader.is_alive():
            self.process.stdout.close()


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("multiproc"), request.param)
    try:
        _wait(lambda: _answers(running), "both workers to start")
        yield running
    finally:
        running.stop()


def _answers(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError("".join(server.output))
    try:
        return server.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _count(server: Server) -> float:
    return value(
        samples(server.get("/metrics", headers=OPENMETRICS).text), "http_requests_total", **ITEMS
    )


def test_two_workers_serve_and_every_scrape_counts_every_request_once(server: Server) -> None:
    sent = 0
    while len(server.worker_pids()) < 2 or sent < 200:  # both workers served some
        assert server.get(f"/v1/items/{sent}").status_code == 200
        sent += 1
        assert sent < 2000, "one worker took every connection"
    # Scrapes answered by either worker, right after the last answer: all exact.
    counts = [_count(server) for _ in range(6)]
    assert counts == [sent] * 6


def test_exemplars_name_kept_traces_from_either_worker(server: Server) -> None:
    kept = set()
    for _ in range(20):
        response = server.get("/boom")
        assert response.status_code == 500
        kept.add(response.headers["traceparent"].split("-")[1])
    found = exemplars(
        server.get("/metrics", headers=OPENMETRICS).text, "http_request_duration_seconds_bucket"
    )
    assert found
    assert {e["trace_id"] for e in found} & kept
    assert all(e["trace_id"] in kept or len(e["trace_id"]) == 32 for e in found)


def test_a_worker_that_stops_takes_none_of_its_counts(server: Server) -> None:
    before = _count(server)
    assert before > 0
    victim = max(server.worker_pids())
    os.kill(victim, signal.SIGTERM)  # the server starts another in its place
    _wait(lambda: not _alive(victim), "the worker to stop")
    _wait(lambda: _answers(server), "the server to answer")
    assert _count(server) == before
    server.get("/v1/items/after")
    assert _count(server) == before + 1


def test_uvicorns_and_the_apps_lines_are_json_with_request_ids(server: Server) -> None:
    def started() -> list[dict[str, Any]]:
        return [
            r for r in server.json_lines() if r.get("message") == "Application startup complete."
        ]

    # Run alone, the test may look before the second worker has finished starting.
    _wait(lambda: len(started()) >= 2, "both workers' start-up lines")
    assert all(r["logger"] == "uvicorn.error" for r in started())
    server.get("/v1/items/9")
    records = server.json_lines()
    own = [r for r in records if str(r.get("message", "")).startswith("reading item")]
    assert own and all(r["logger"] == "shop" and r["request_id"] and r["trace_id"] for r in own)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped child stays a zombie until uvicorn reaps it, which may happen between
    # the signal above and the read below (the read then fails: ESRCH, or no file).
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return False
    return status != "Z"


def test_a_pid_taken_by_a_later_process_is_another_worker() -> None:
    from golden_signals.metrics import _alive, _start_time

    mine = _start_time(os.getpid())
    assert mine is not None
    assert _alive(os.getpid(), mine)
    assert not _alive(os.getpid(), mine + 1)  # same pid, another start: not that worker


def test_a_later_process_with_a_reused_pid_publishes_to_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died keeps its counts in the sum: the process that gets its pid
    later (another start time) must not overwrite its file."""
    from golden_signals import metrics

    for started, count in ((111, 5.0), (222, 1.0)):
        monkeypatch.setattr(metrics, "_start_time", lambda pid, started=started: started)
        registry = metrics.SignalRegistry(tmp_path, name="shop", include=None)
        registry.counter("orders_total", "Orders.").inc((), count)
        registry.publish()

    files = sorted(tmp_path.glob("golden-signals-shop-*.json"))
    assert [json.loads(path.read_bytes())["start"] for path in files] == [111, 222]
    assert [
        json.loads(path.read_bytes())["families"]["orders_total"]["values"] for path in files
    ] == [[[[], 5.0]], [[[], 1.0]]]


def test_a_scrape_never_moves_a_later_publication_request_back(tmp_path: Path) -> None:
    later = str(time.monotonic_ns() + 10**12)  # a concurrent scrape's, asked later
    (tmp_path / "golden-signals-publish-request").write_text(later)
    from golden_signals.metrics import SignalRegistry

    registry = SignalRegistry(tmp_path, name="shop", include=None, scrape_wait=0.05)
    registry.render(None)
    assert (tmp_path / "golden-signals-publish-request").read_text() == later


#: A worker of the app "shop" in a process of its own: 7 orders published when it starts
#: publishing, 5 more after (published only when asked), its publishing thread's id
#: printed; it flushes on its own once an hour, so only a scrape makes it publish.
_IDLE_WORKER = """
import sys, time
from golden_signals.metrics import SignalRegistry
registry = SignalRegistry(sys.argv[1], name="shop", include=None, flush_interval=3600)
orders = registry.counter("orders_total", "Orders.")
orders.inc((), 7)
registry.start()
orders.inc((), 5)
print(registry._thread.native_id, flush=True)
time.sleep(600)
"""


def _switches(pid: int, thread: int) -> int:
    """How many times the thread ``thread`` of process ``pid`` gave the CPU up (slept)."""
    status = Path(f"/proc/{pid}/task/{thread}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _orders(directory: Path) -> float:
    from golden_signals.metrics import SignalRegistry

    scraper = SignalRegistry(directory, name="shop", include=None, scrape_wait=10)
    scraper.counter("orders_total", "Orders.")  # a worker sums the families it has
    text = scraper.render("application/openmetrics-text; version=1.0.0")[0].decode()
    return value(samples(text), "orders_total")


def test_an_idle_worker_sleeps_until_a_scrape_wakes_it(tmp_path: Path) -> None:
    """No polling: the publishing thread of a worker nobody scrapes stays asleep (a
    thread that woke every few milliseconds cost a saturated worker CPU at each wake),
    and a scrape wakes it at once to publish what it has. A worker killed outright
    leaves its pipe, which the next scrape removes; its counts stay."""
    worker = subprocess.Popen(
        [sys.executable, "-c", _IDLE_WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        thread = int(worker.stdout.readline())
        (pipe,) = tmp_path.glob("golden-signals-shop-*.wake")
        before = _switches(worker.pid, thread)
        time.sleep(1.0)
        assert _switches(worker.pid, thread) - before <= 1  # polling would wake ~20 times
        assert _orders(tmp_path) == 12  # the 5 after its start: published when asked
        assert pipe.exists()
    finally:
        worker.kill()
        worker.wait()
        assert worker.stdout is not None
        worker.stdout.close()
    assert _orders(tmp_path) == 12
    assert not pipe.exists()


def test_a_worker_that_stops_removes_its_pipe(tmp_path: Path) -> None:
    from golden_signals.metrics import SignalRegistry

    registry = SignalRegistry(tmp_path, name="shop", include=None, flush_interval=3600)
    registry.start()
    thread = registry._thread
    assert thread is not None
    assert len(list(tmp_path.glob("*.wake"))) == 1
    registry.close()  # its thread woken, not left to wait for its next flush
    assert not thread.is_alive()
    assert not list(tmp_path.glob("*.wake*"))


def test_a_pipe_removed_under_a_running_worker_is_made_again(tmp_path: Path) -> None:
    from golden_signals.metrics import SignalRegistry

    registry = SignalRegistry(tmp_path, name="shop", include=None, flush_interval=0.05)
    registry.start()
    try:
        (pipe,) = tmp_path.glob("*.wake")
        pipe.unlink()  # as a scrape that took it for a dead worker's would
        _wait(pipe.exists, "the pipe made again", timeout=10)
    finally:
        registry.close()
    assert not pipe.exists()


def test_without_named_pipes_a_worker_looks_for_scrapes_instead(tmp_path: Path) -> None:
    """Where ``mkfifo`` fails (a file system without named pipes), the thread looks for a
    scrape's request every 50 ms: scrapes stay exact."""
    script = "import os\ndel os.mkfifo\n" + _IDLE_WORKER
    worker = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        worker.stdout.readline()
        assert not list(tmp_path.glob("*.wake*"))
        assert _orders(tmp_path) == 12
    finally:
        worker.kill()
        worker.wait()
        assert worker.stdout is not None
        worker.stdout.close()


def test_a_pipe_on_a_descriptor_above_1023_wakes_its_thread(tmp_path: Path) -> None:
    """``select()`` cannot take such a descriptor; a busy worker may have one."""
    import resource

    from golden_signals.wake import WakePipe, poke

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100:
        pytest.skip(f"at most {soft} open files here")
    made = WakePipe.make(tmp_path / "w.wake")
    assert made is not None and made._fd is not None
    high = os.dup2(made._fd, 1050)
    pipe = WakePipe(made.path, high)
    try:
        poke(made.path)
        pipe.wait(30)  # returns at once (a byte is there), having read it
        with pytest.raises(BlockingIOError):
            os.read(high, 1)
    finally:
        pipe.forget()
        made.close()


def test_a_start_that_cannot_publish_leaves_no_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at start-up: the error is the caller's, and no pipe stays open (no
    thread would ever close it, nor could a scrape remove it)."""
    from golden_signals.metrics import SignalRegistry

    registry = SignalRegistry(tmp_path, name="shop", include=None)

    def full(self: SignalRegistry) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SignalRegistry, "publish", full)
    with pytest.raises(OSError, match="No space"):
        registry.start()
    assert registry._thread is None
    assert not list(tmp_path.glob("*.wake*"))
    registry.close()  # nothing to stop
