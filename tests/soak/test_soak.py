"""Soak: 10,000 predictions on the real model, and proof the checks can fail.

Run by ``make soak`` (marked ``soak``; ``make test`` skips it). After a warm-up of
1,000 predictions the server's resident memory, open file descriptors and threads are
recorded; after 9,000 more they are compared: memory may grow by less than 5%, file
descriptors and threads not at all beyond a small allowance (thread pools and
connections come and go). Latency percentiles of the last thousand predictions must
match those of the first thousand. The same harness run against a backend that keeps
every input (tests/gated_app.py with ``GATE_LEAK=1``) must fail the memory check.
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

from tests.images import cat_jpeg
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


def soak(server: GatewayProcess, warmup: int, total: int) -> Run:
    """Warm up, snapshot, drive the rest, snapshot (connections closed at both)."""
    run = Run()
    _drive(server, warmup, run)
    time.sleep(1)  # let closed connections and finished threads go
    run.warm = Snapshot.of(server)
    _drive(server, total - warmup, run)
    time.sleep(1)
    run.end = Snapshot.of(server)
    return run


def _percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def test_ten_thousand_predictions_leave_memory_descriptors_threads_and_latency_stable() -> None:
    # One worker: the process whose memory, descriptors and threads are measured.
    with gateway_process({"LOG_LEVEL": "WARNING", "WORKERS": "1"}) as server:
        run = soak(server, warmup=1_000, total=10_000)
    assert run.statuses.count(200) == 10_000
    assert run.warm is not None and run.end is not None
    growth = run.memory_growth()
    print(f"rss {run.warm.rss_bytes / 2**20:.1f} -> {run.end.rss_bytes / 2**20:.1f} MiB")
    print(f"fds {run.warm.fds} -> {run.end.fds}, threads {run.warm.threads} -> {run.end.threads}")
    assert growth < MAX_MEMORY_GROWTH, f"resident memory grew {growth:.1%}"
    assert run.end.fds <= run.warm.fds + ALLOWANCE
    assert run.end.threads <= run.warm.threads + ALLOWANCE
    first, last = _percentiles(run.latencies[:1000]), _percentiles(run.latencies[-1000:])
    print(f"first thousand {first}\nlast thousand  {last}")
    # Same service, same load: the last thousand are not slower than the first (ratios
    # with room for a noisy shared machine, not absolute durations).
    assert last["p50"] <= 1.5 * first["p50"]
    assert last["p90"] <= 2.0 * first["p90"]
    assert last["p99"] <= 2.0 * first["p99"]


def test_the_memory_check_catches_a_backend_that_keeps_every_input(tmp_path: Path) -> None:
    env = {"GATE_DIR": str(tmp_path), "GATE_LEAK": "1", "LOG_LEVEL": "WARNING", "WORKERS": "1"}
    with gateway_process(env, args=("--app", "tests.gated_app:app")) as server:
        run = soak(server, warmup=200, total=1_700)
    assert run.statuses.count(200) == 1_700
    growth = run.memory_growth()
    print(f"leaking control: resident memory grew {growth:.1%}")
    assert growth >= MAX_MEMORY_GROWTH, "the memory check would not have caught this leak"
