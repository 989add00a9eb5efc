"""What each part of observability costs a request, in process, with requests in flight.

    .venv/bin/python -m bench.observability_split [--rounds 3] [--requests 1600] [--concurrency 16]

The app as a worker runs it (metrics in multiprocess mode, the bench photo uploaded as
multipart, a model that answers at once) is driven in process by ``--concurrency``
concurrent callers; configurations take turns within every round: everything on (the
defaults: metrics, an INFO access line written to a file, tail-sampled traces), each
part switched off alone, and everything off. CPU is the process's user + system time
(every thread) per request; the table gives medians and each part's share as the
difference from everything on. Concurrency matters: one request at a time costs far
less than sixteen interleaved, and a worker under load has sixteen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import photo_jpeg
from bench.http_bench import BOUNDARY, multipart_body
from bench.telemetry_overhead import _call, _loader

ALL_ON = "everything on (defaults)"
ALL_OFF = "everything off"
CONFIGS: dict[str, dict[str, Any]] = {
    ALL_ON: {},
    "metrics off": {"enable_metrics": False},
    "tracing off": {"enable_tracing": False},
    "logs at WARNING (no access line)": {"log_level": "WARNING"},
    ALL_OFF: {"enable_metrics": False, "enable_tracing": False, "log_level": "WARNING"},
}


async def _measure(
    config: dict[str, Any], directory: str, requests: int, concurrency: int, log: Path
) -> float:
    """CPU microseconds per request (user + system, every thread) for one configuration."""
    from inference_gateway.app import create_app
    from inference_gateway.config import Settings
    from inference_gateway.observability.logging import setup_logging

    values: dict[str, Any] = {
        "enable_metrics": True,
        "enable_tracing": True,
        "log_level": "INFO",
        "prometheus_multiproc_dir": directory,
        **config,
    }
    with log.open("w") as stream:
        setup_logging(values["log_level"], "json", stream=stream)
        app = create_app(
            Settings(_env_file=None, workers=2, **values),
            model_loader=_loader,
            configure_logging=False,
        )
        body = multipart_body(photo_jpeg())
        content_type = f"multipart/form-data; boundary={BOUNDARY}"

        async def caller(count: int) -> None:
            for _ in range(count):
                status = await _call(app, "POST", "/predict", body, content_type)
                assert status == 200, status

        async with app.router.lifespan_context(app):
            while not app.state.registry.resolve().ready:
                await asyncio.sleep(0.01)
            await asyncio.gather(*(caller(10) for _ in range(concurrency)))  # warm up
            before = os.times()
            each = requests // concurrency
            await asyncio.gather(*(caller(each) for _ in range(concurrency)))
            after = os.times()
    spent = after.user - before.user + after.system - before.system
    return spent / (each * concurrency) * 1e6


def main() -> None:
    """Run the rounds and print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp  # as `inference-gateway serve` sets it
        for _ in range(args.rounds):
            for name, config in CONFIGS.items():
                cpu = asyncio.run(
                    _measure(config, tmp, args.requests, args.concurrency, Path(tmp) / "log")
                )
                samples[name].append(cpu)
    on = statistics.median(samples[ALL_ON])
    off = statistics.median(samples[ALL_OFF])
    print(
        f"In process, {args.concurrency} concurrent callers, {args.requests} requests per "
        f"run, medians of {args.rounds} rounds (CPU: user + system, every thread)\n"
    )
    print("| configuration | CPU µs/request | saved against everything on | runs |")
    print("|---|---:|---:|---|")
    for name, values in samples.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {median:.0f} | {on - median:+.0f} | {runs} |")
    print(f"\nObservability costs {on - off:.0f} µs of CPU per request here ({on / off - 1:.0%}).")


if __name__ == "__main__":
    main()
