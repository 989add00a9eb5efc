"""Interleaved runs of gateway configurations over HTTP: images/s and CPU per image.

    .venv/bin/python -m bench.compare WORKERS=1 WORKERS=2,PREPROCESS_WORKERS=1 WORKERS=2 \\
        [--concurrency 8,32] [--seconds 8] [--repeats 3] [--instant]

Each argument is one configuration: comma-separated environment overrides on top of
full observability (``-`` for none); ``APP=module:attr`` serves another app (e.g.
``APP=bench.cache_loader_app:app``, the built-in model loaded as before repositories). Configurations take turns within every repeat, so
a noisy neighbour hits them alike; the table reports medians. ``--instant`` serves a
model that answers at once (`bench.instant_app`), leaving only the gateway's own CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.common import median
from bench.http_bench import OBS_ON, Target, _script, run_wrk, server


def _target(spec: str, instant: bool) -> Target:
    overrides = dict(kv.split("=", 1) for kv in spec.split(",") if "=" in kv)
    app = overrides.pop("APP", "bench.instant_app:app" if instant else None)
    args = ("--app", app) if app is not None else ()
    return Target(spec, "gateway", {**OBS_ON, **overrides}, args=args)


def main() -> None:
    """Run the configurations in turn and print a markdown table of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--instant", action="store_true")
    options = parser.parse_args()
    concurrency = [int(c) for c in options.concurrency.split(",")]
    runs: dict[tuple[str, int], list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = _script(workdir)
        for repeat in range(options.repeats):
            for spec in options.configs:
                with server(_target(spec, options.instant), workdir) as running:
                    run_wrk(running, script, concurrency[0], 2)  # warm up
                    for connections in concurrency:
                        result = run_wrk(running, script, connections, options.seconds)
                        runs[(spec, connections)].append(result)
                        print(
                            f"repeat {repeat + 1} {spec} c={connections}: "
                            f"{result['rps']:.1f}/s, p50 {result['p50_ms']:.2f} ms, "
                            f"{result['server_cpu_ms']:.2f} ms CPU, "
                            f"{result['spans_per_image']:.1f} spans exported per image",
                            flush=True,
                        )
    print(
        "\n| configuration | concurrency | images/s | p50 ms | p99 ms | server CPU ms/image "
        "| of which event loops | cores | trace sink cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (spec, connections), results in runs.items():
        m = {key: median([r[key] for r in results]) for key in results[0]}
        print(
            f"| {spec} | {connections} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.0f} | "
            f"{m['server_cpu_ms']:.1f} | {m['main_cpu_ms']:.1f} | {m['server_cores']:.2f} "
            f"| {m['sink_cpu']:.2f} |"
        )


if __name__ == "__main__":
    main()
