"""Soak: 10,000 predictions on the real model, and proof the checks can fail.

Run by ``make soak`` (marked ``soak``; ``make test`` skips it). After a warm-up of
1,000 predictions the server's resident memory, open file descriptors and threads are
recorded; after 9,000 more they are compared: memory may grow by less than 5%, file
descriptors and threads not at all beyond a small allowance (thread pools come and
go), and the server counted every prediction. Latency percentiles of the first and the
last thousand predictions are printed as a report, not asserted: on a shared machine
they measure the neighbours as much as the server (speed is measured in ``bench/``).
The same harness run against a backend that keeps every input (tests/gated_app.py
with ``GATE_LEAK=1``) must fail the memory check.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.scrape import parse, value
from tests.servers import GatewayProcess, gateway_process

pytestmark = pytest.mark.soak

CLIENTS = 4
MAX_MEMORY_GROWTH = 0.05
#: Descriptors or threads that may come and go without being a leak.
ALLOWANCE = 4


@dataclass
class Snapshot:
    """What a server process holds at one moment."""

    rss_bytes: int
    fds: int
    threads: int

    @classmethod
    def of(cls, server: GatewayProcess) -> Snapshot:
        pid = server.process.pid
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
        return cls(server.rss_bytes(), len(os.listdir(f"/proc/{pid}/fd")), threads)


@dataclass
class Run:
    """Latencies of every prediction, in completion order, and the snapshots."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    warm: Snapshot | None = None
    end: Snapshot | None = None

    def memory_growth(self) -> float:
        assert self.warm is not None and self.end is not None
        return (self.end.rss_bytes - self.warm.rss_bytes) / self.warm.rss_bytes


def _drive(server: GatewayProcess, count: int, run: Run) -> None:
    """Send ``count`` predictions from `CLIENTS` keep-alive clients; wait for all."""
    lock = threading.Lock()
    remaining = [count]
    body = cat_jpeg()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                response = http.post(
                    "/predict", content=body, headers={"content-type": "image/jpeg"}
                )
                elapsed = time.perf_counter() - started
                with lock:
                    run.latencies.append(elapsed)
                    run.statuses.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _open_connections(port: int) -> int:
    """Connections to ``port`` whose server side is not closed yet (IPv4 and IPv6)."""
    open_states = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT: the server still holds the socket
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] in open_states:
                count += 1
    return count


def _snapshot_when_idle(server: GatewayProcess) -> Snapshot:
    """A snapshot once the server has closed every client connection."""
    port = int(server.url.rsplit(":", 1)[1])
    wait_until(lambda: _open_connections(port) == 0, what="the server to close its connections")
    return Snapshot.of(server)


def soak(server: GatewayProcess, warmup: int, total: int) -> Run:
    """Warm up, snapshot, drive the rest, snapshot (connections closed at both)."""
    run = Run()
    _drive(server, warmup, run)
    run.warm = _snapshot_when_idle(server)
    _drive(server, total - warmup, run)
    run.end = _snapshot_when_idle(server)
    return run


def _percentiles(latencies: list[float]) -> str:
    """P50, P90 and P99 of ``latencies`` (seconds), in milliseconds, for a report."""
    cuts = statistics.quantiles(latencies, n=100)
    return ", ".join(
        f"{name} {cuts[i] * 1000:.1f} ms" for name, i in (("p50", 49), ("p90", 89), ("p99", 98))
    )


def test_ten_thousand_predictions_leave_memory_descriptors_and_threads_stable() -> None:
    # One worker: the process whose memory, descriptors and threads are measured.
    with gateway_process({"LOG_LEVEL": "WARNING", "WORKERS": "1"}) as server:
        run = soak(server, warmup=1_000, total=10_000)
        samples = parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
    assert run.statuses.count(200) == 10_000
    counted = value(
        samples, "http_requests_total", method="POST", endpoint="/predict", status="200"
    )
    assert counted == 10_000
    assert run.warm is not None and run.end is not None
    growth = run.memory_growth()
    print(f"rss {run.warm.rss_bytes / 2**20:.1f} -> {run.end.rss_bytes / 2**20:.1f} MiB")
    print(f"fds {run.warm.fds} -> {run.end.fds}, threads {run.warm.threads} -> {run.end.threads}")
    assert growth < MAX_MEMORY_GROWTH, f"resident memory grew {growth:.1%}"
    assert run.end.fds <= run.warm.fds + ALLOWANCE
    assert run.end.threads <= run.warm.threads + ALLOWANCE
    # A report for whoever reads the run, not a check (see the module docstring).
    print(f"latency, first thousand: {_percentiles(run.latencies[:1000])}")
    print(f"latency, last thousand:  {_percentiles(run.latencies[-1000:])}")


def test_the_memory_check_catches_a_backend_that_keeps_every_input(tmp_path: Path) -> None:
    env = {"GATE_DIR": str(tmp_path), "GATE_LEAK": "1", "LOG_LEVEL": "WARNING", "WORKERS": "1"}
    with gateway_process(env, args=("--app", "tests.gated_app:app")) as server:
        run = soak(server, warmup=200, total=1_700)
    assert run.statuses.count(200) == 1_700
    growth = run.memory_growth()
    print(f"leaking control: resident memory grew {growth:.1%}")
    assert growth >= MAX_MEMORY_GROWTH, "the memory check would not have caught this leak"
