"""Graceful shutdown under load, measured: what a rolling restart costs the clients.

Starts the gateway (real model), lets ``--clients`` keep-alive clients predict for a
few seconds, sends SIGTERM, and reports: requests in flight at the signal and how they
ended, what clients got during the drain, how long the process took to exit, and its
exit status. tests/integration/test_shutdown.py asserts the same behaviour; this
prints the figures docs/operations.md quotes.

    .venv/bin/python -m bench.shutdown [--clients 8] [--delay 0] [--load-seconds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import photo_jpeg
from bench.http_bench import _free_port, _ready


@dataclass
class Outcome:
    started: float
    ended: float
    status: int  # 0: connection refused or closed before an answer


def _client(url: str, body: bytes, stop: threading.Event, out: list[Outcome]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{url}/predict", data=body, headers={"content-type": "image/jpeg"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
        out.append(Outcome(started, time.monotonic(), status))
        if status != 200:
            if status == 0:
                return
            time.sleep(0.05)


def main() -> None:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.0, help="SHUTDOWN_DELAY_SECONDS")
    parser.add_argument("--load-seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "LOG_FORMAT": "json",
           "ENVIRONMENT": "production", "SHUTDOWN_DELAY_SECONDS": str(args.delay)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log = (Path(tmp) / "gateway.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_gateway.cli", "serve"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        while not _ready(f"{url}/ready"):
            time.sleep(0.2)
        outcomes: list[Outcome] = []
        stop = threading.Event()
        body = photo_jpeg()
        threads = [
            threading.Thread(target=_client, args=(url, body, stop, outcomes))
            for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.load_seconds)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        exited = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        log.close()
    in_flight = [o for o in outcomes if o.started < signalled < o.ended]
    after = [o for o in outcomes if o.started >= signalled]
    before = [o for o in outcomes if o.ended <= signalled]
    print(f"clients: {args.clients}, SHUTDOWN_DELAY_SECONDS={args.delay:g}")
    print(f"answered before SIGTERM: {len(before)} ({Counter(o.status for o in before)})")
    print(
        f"in flight at SIGTERM: {len(in_flight)}, answers: "
        f"{dict(Counter(o.status for o in in_flight))}, last answered "
        f"{max((o.ended - signalled for o in in_flight), default=0) * 1000:.0f} ms after"
    )
    print(f"sent after SIGTERM: {len(after)}, answers: {dict(Counter(o.status for o in after))}")
    print(f"SIGTERM to exit: {(exited - signalled) * 1000:.0f} ms, exit status {code}")


if __name__ == "__main__":
    main()
