"""Graceful shutdown of a real server under real load, with the real model.

SIGTERM arrives while clients keep predicting: ``/ready`` must answer 503 at once, new
predictions get 503 ``draining``, every request already in flight gets its normal
answer, spans reach the collector, and the process exits 0 within the grace period.
The server's counters are read back from its multiprocess metric files after it exits,
so the accounting check covers the requests of its very last moments.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.collector import otlp_receiver
from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.servers import gateway_process

pytestmark = pytest.mark.integration

SHUTDOWN_DELAY = 1.5
GRACE = 20.0
CLIENTS = 6
#: A request sent this long before the signal is certainly in the server already.
IN_FLIGHT_MARGIN = 0.2


@dataclass
class Outcome:
    started: float
    status: int | None  # None: the connection was refused or closed (listener gone)
    problem_type: str | None = None
    trace_id: str | None = None


def _server_counts(directory: Path) -> Counter[str]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    counts: Counter[str] = Counter()
    for family in registry.collect():
        for sample in family.samples:
            if (
                sample.name == "http_requests_total"
                and sample.labels.get("endpoint") == "/predict"
                and sample.value
            ):
                counts[sample.labels["status"]] += int(sample.value)
    return counts


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drains_answers_in_flight_work_and_exits_0(
    tmp_path: Path, workers: int
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # uvicorn's parent relays SIGTERM to its workers from a loop that wakes every 0.5 s.
    delay = SHUTDOWN_DELAY if workers == 1 else 3.0
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post(
                        "/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
                    )
                except httpx.TransportError:
                    with lock:
                        outcomes.append(Outcome(started, None))
                    return
                body = response.json()
                outcome = Outcome(
                    started, response.status_code, body.get("type"), body.get("trace_id")
                )
                with lock:
                    outcomes.append(outcome)
                if response.status_code == 503:
                    time.sleep(0.05)

    with otlp_receiver() as (collector_url, received):
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "SHUTDOWN_DELAY_SECONDS": str(delay),
            "GRACEFUL_SHUTDOWN_SECONDS": str(GRACE),
            "WORKERS": str(workers),
        }
        with gateway_process(env) as gateway:
            threads = [threading.Thread(target=client, args=(gateway.url,)) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(outcomes) >= 40, timeout=120, what="load to build up")

            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            # At once (with several workers, once the parent has relayed the signal to
            # them, within about 0.5 s): not ready, new work refused with a clean problem.
            if workers > 1:
                wait_until(
                    lambda: all(
                        httpx.get(f"{gateway.url}/ready", timeout=10).status_code == 503
                        for _ in range(4)  # new connections: whichever worker takes them
                    ),
                    timeout=delay - 0.5,
                    what="the workers to drain",
                )
            ready = httpx.get(f"{gateway.url}/ready", timeout=10)
            late = httpx.post(
                f"{gateway.url}/predict",
                content=cat_jpeg(),
                headers={"content-type": "image/jpeg"},
                timeout=10,
            )
            exit_code = gateway.process.wait(timeout=delay + GRACE + 30)
            exited = time.monotonic()
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            log = gateway.log_lines()

        assert exit_code == 0, "\n".join(log[-30:])
        assert exited - signalled < delay + GRACE
        assert ready.status_code == 503
        assert ready.json()["type"] == "urn:inference-gateway:problem:draining"
        assert late.status_code == 503
        assert late.json()["type"] == "urn:inference-gateway:problem:draining"
        assert late.headers["retry-after"]

        answered = [o for o in outcomes if o.status is not None]
        # Every request in flight when the signal came got its normal answer ...
        in_flight = [o for o in answered if o.started < signalled - IN_FLIGHT_MARGIN]
        assert in_flight and all(o.status == 200 for o in in_flight)
        # ... and everything else was a prediction or a clean refusal, nothing else.
        for outcome in answered:
            assert outcome.status in (200, 503), outcome
            if outcome.status == 503:
                assert outcome.problem_type == "urn:inference-gateway:problem:draining"
        assert any(o.status == 503 for o in answered)  # load continued into the drain

        # Exact accounting, including the last moments before exit.
        client_counts = Counter(str(o.status) for o in answered)
        client_counts[str(late.status_code)] += 1
        assert _server_counts(metrics_dir) == client_counts

        # Spans were flushed before exit: every answered prediction's trace arrived.
        with received.lock:
            exported = {trace for name, trace, _ in received.spans if name == "POST /predict"}
        traced = {o.trace_id for o in answered if o.status == 200}
        assert traced <= exported
