"""Rolling restarts, a scale-down and a crash behind a real HAProxy, under load.

Three real ``inference-gateway serve`` processes behind HAProxy (Debian's, with
deploy/haproxy/haproxy.cfg: health checks on ``/ready``, retries on a refused or
empty connection), and a steady open-loop load of real photos through it. Restarting
the three one after the other (SIGTERM, wait for the exit, start again, wait for
ready), or stopping one for good, must cost the clients nothing: every answer is a 200,
and the servers' ``http_requests_total`` add up to the client's count. A SIGKILL is
the one failure that may show: bounded to the requests that process had in flight,
with the others taking over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from inference_gateway.observability.metrics import multiprocess_registry
from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.servers import GatewayProcess, free_port, gateway_process
from tests.tools import unavailable

HAPROXY = shutil.which("haproxy") or "haproxy"
pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
SERVERS = 3
#: Open-loop load: requests per second, whatever the answers take.
RATE = 12.0
#: Longer than HAProxy's check interval x fall (500 ms x 1): out of rotation first.
SHUTDOWN_DELAY = "2"
GATEWAY_ENV = {
    "WORKERS": "1",
    "SHUTDOWN_DELAY_SECONDS": SHUTDOWN_DELAY,
    "GRACEFUL_SHUTDOWN_SECONDS": "20",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Member:
    """One gateway slot behind HAProxy: its port and every process that served it.

    The port is picked before the first start (`free_port`), not bound as port 0: HAProxy's
    configuration names it, and each restart of the slot must listen on it again."""

    port: int
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    process: GatewayProcess | None = None
    metric_dirs: list[Path] = field(default_factory=list)

    def start(self, workdir: Path) -> None:
        metrics = workdir / f"metrics-{self.port}-{len(self.metric_dirs)}"
        metrics.mkdir()
        self.metric_dirs.append(metrics)
        env = {**GATEWAY_ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.process = self.stack.enter_context(gateway_process(env, port=self.port))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.process.send_signal(sig)
        code = self.process.process.wait(timeout=60)
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.process = None
        return code

    def served(self) -> Counter[str]:
        """The /predict answers of every process of this slot, by status."""
        counts: Counter[str] = Counter()
        for directory in self.metric_dirs:
            registry = multiprocess_registry(str(directory))  # what the workers published
            for family in registry.collect():
                for sample in family.samples:
                    labels = sample.labels
                    if (
                        sample.name == "http_requests_total"
                        and labels.get("endpoint") == "/predict"
                    ):
                        counts[labels["status"]] += int(sample.value)
        return +counts


class HAProxy:
    """HAProxy with the example configuration, in front of the members."""

    def __init__(self, members: list[Member], workdir: Path) -> None:
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        self.log = workdir / "haproxy.log"
        env = {
            **os.environ,
            "LISTEN": f"127.0.0.1:{self.port}",
            "STATS_SOCKET": str(self.socket),
            **{f"GATEWAY_{n}": f"127.0.0.1:{m.port}" for n, m in enumerate(members, 1)},
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log
            )
        wait_until(self.socket.exists, what="HAProxy's admin socket")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it (``UP``, ``DOWN``, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            r["svname"]: r["status"]
            for r in rows
            if r["pxname"] == "gateways" and r["svname"].startswith("gateway")
        }

    def wait_up(self, count: int) -> None:
        wait_until(
            lambda: list(self.states().values()).count("UP") == count,
            timeout=60,
            what=f"{count} servers UP in HAProxy",
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class Load:
    """An open-loop load of real photos: a request every 1/RATE s, answered or not."""

    url: str
    answers: list[int | str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        photo = cat_jpeg()
        with httpx.Client(base_url=self.url, timeout=30) as client, ThreadPoolExecutor(32) as pool:

            def one() -> None:
                try:
                    response = client.post(
                        "/predict", content=photo, headers={"content-type": "image/jpeg"}
                    )
                    outcome: int | str = response.status_code
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                with self.lock:
                    self.answers.append(outcome)

            start = time.monotonic()
            for n in range(100_000):  # bounded; the test stops it long before
                if self.stop.is_set():
                    break
                delay = start + n / RATE - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                pool.submit(one)

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def tally(self) -> Counter[int | str]:
        with self.lock:
            return Counter(self.answers)


@pytest.fixture
def cluster() -> Iterator[tuple[list[Member], HAProxy, Path]]:
    if shutil.which("haproxy") is None:
        unavailable("haproxy is not installed: `make test` installs it (scripts/ensure_tools.sh)")
    with tempfile.TemporaryDirectory(prefix="rolling-") as tmp:
        workdir = Path(tmp)
        members = [Member(free_port()) for _ in range(SERVERS)]
        proxy: HAProxy | None = None
        try:
            for member in members:
                member.start(workdir)
            proxy = HAProxy(members, workdir)
            proxy.wait_up(SERVERS)
            yield members, proxy, workdir
        finally:
            if proxy is not None:
                proxy.close()
            for member in members:
                member.stack.close()


@contextlib.contextmanager
def under_load(proxy: HAProxy) -> Iterator[Load]:
    load = Load(proxy.url)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        wait_until(lambda: load.count() >= 10, what="the load to start")
        yield load
        done = load.count()
        wait_until(lambda: load.count() >= done + 10, what="more load once the change is done")
    finally:
        load.stop.set()
        thread.join(timeout=60)


def _served(members: list[Member]) -> Counter[str]:
    total: Counter[str] = Counter()
    for member in members:
        total += member.served()
    return total


def test_a_rolling_restart_under_load_loses_no_request(
    cluster: tuple[list[Member], HAProxy, Path],
) -> None:
    members, proxy, workdir = cluster
    with under_load(proxy) as load:
        for member in members:
            assert member.stop() == 0
            member.start(workdir)
            proxy.wait_up(SERVERS)
    for member in members:
        assert member.stop() == 0  # every count is in the metric files
    tally = load.tally()
    assert set(tally) == {200}, tally
    assert _served(members) == Counter({"200": tally[200]})
    assert all(len(m.metric_dirs) == 2 and m.served() for m in members)  # all took part


def test_a_scale_down_under_load_loses_no_request(
    cluster: tuple[list[Member], HAProxy, Path],
) -> None:
    members, proxy, _ = cluster
    with under_load(proxy) as load:
        assert members[0].stop() == 0  # for good
        wait_until(lambda: proxy.states()["gateway1"].startswith("DOWN"), what="gateway1 DOWN")
        before = load.count()
        wait_until(lambda: load.count() >= before + 20, what="the others to serve on")
    for member in members[1:]:
        assert member.stop() == 0
    tally = load.tally()
    assert set(tally) == {200}, tally
    assert _served(members) == Counter({"200": tally[200]})


def test_a_crash_fails_only_what_that_process_had_in_flight(
    cluster: tuple[list[Member], HAProxy, Path],
) -> None:
    members, proxy, _ = cluster
    with under_load(proxy) as load:
        before = load.count()
        assert members[0].stop(signal.SIGKILL) == -signal.SIGKILL
        wait_until(lambda: proxy.states()["gateway1"].startswith("DOWN"), what="HAProxy to see it")
        killed_at = load.count()
        wait_until(lambda: load.count() >= killed_at + 20, what="the others to take over")
    tally = load.tally()
    failed = sum(n for outcome, n in tally.items() if outcome != 200)
    # At 12 requests/s, a process holds a handful at a time; every other answer is a 200.
    assert failed <= 8, tally
    with load.lock:
        after = load.answers[killed_at + 5 :]
    assert after and set(after) == {200}, Counter(after)
    assert before >= 10
