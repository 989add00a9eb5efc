"""`make bench`: every benchmark in one run, one markdown report, raw JSON beside it.

Writes ``bench/results/README.md`` (tables, the targets as ratios measured in the same
run) and ``bench/results/raw/*.json`` (every run, not tracked by git).

    .venv/bin/python -m bench.run_all [--seconds 8] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from bench import http_bench, limit, overload
from bench.common import RAW, RESULTS, machine, photo_jpeg


def _cell(result: dict[str, Any], name: str, concurrency: int) -> dict[str, float] | None:
    return result["median"].get(name, {}).get(str(concurrency))


def targets(
    ceiling: float, http: dict[str, Any], shed: dict[str, Any]
) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, each as (what, measured, met?)."""
    on = http_bench.DEFAULTS
    off_obs = http_bench.OBS_OFF_NAME
    naive = "naive FastAPI, onnxruntime inline"
    peer = "LitServe 0.2, onnxruntime, max_batch_size 8"
    rows: list[tuple[str, str, bool | None]] = []
    gw32, gw8 = _cell(http, on, 32), _cell(http, on, 8)
    if gw32:
        ratio = gw32["rps"] / ceiling
        rows.append(("gateway at c=32 ≥ 85% of the ceiling", f"{ratio:.0%}", ratio >= 0.85))
    naive32 = _cell(http, naive, 32)
    if gw32 and naive32 and naive32["rps"] > 0:
        ratio = gw32["rps"] / naive32["rps"]
        rows.append(("≥ 1.5× the naive app at c=32", f"{ratio:.2f}×", ratio >= 1.5))
    peer32 = _cell(http, peer, 32)
    if gw32 and peer32 and peer32["rps"] > 0:
        ratio = gw32["rps"] / peer32["rps"]
        lower = gw32["p99_ms"] < peer32["p99_ms"]
        rows.append(
            (
                "≥ 1.5× LitServe at c=32, with a lower p99",
                f"{ratio:.2f}×, p99 {gw32['p99_ms']:.0f} vs {peer32['p99_ms']:.0f} ms",
                ratio >= 1.5 and lower,
            )
        )
    # Throughput under load; p50 with one connection, where it is the time a request
    # takes (at c=32 it is mostly queueing, and moves with throughput).
    quiet32, quiet1, gw1 = _cell(http, off_obs, 32), _cell(http, off_obs, 1), _cell(http, on, 1)
    if gw32 and quiet32 and quiet32["rps"] > 0 and gw1 and quiet1:
        cost = 1 - gw32["rps"] / quiet32["rps"]
        p50 = gw1["p50_ms"] - quiet1["p50_ms"]
        rows.append(
            (
                "full observability ≤ 5% throughput (c=32) and ≤ 1 ms p50 (c=1)",
                f"{cost:.0%} throughput, {p50:+.1f} ms p50",
                cost <= 0.05 and p50 <= 1,
            )
        )
    if gw8:
        rows.append(("p99 ≤ 300 ms at c=8", f"{gw8['p99_ms']:.0f} ms", gw8["p99_ms"] <= 300))
    ratio = shed["goodput_ratio_2x"]
    rows.append(
        ("goodput at 2× the saturation rate ≥ 90% of saturation", f"{ratio:.0%}", ratio >= 0.9)
    )
    return rows


def main() -> None:
    """Run everything and write the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer servers, for a smoke run")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    ceiling = limit.run("onnxruntime", 5, args.repeats, [1, 4, 8])
    http = http_bench.run(args.seconds, args.repeats, args.quick)
    shed = overload.run(args.seconds, args.repeats)
    rows = targets(ceiling["limit"], http, shed)
    report = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}. Run {started:%Y-%m-%d %H:%M} UTC, "
        f"{args.repeats} repeats per cell (medians), {args.seconds:.0f} s per HTTP run. "
        "Command: `make bench`. Numbers from a shared 2-vCPU VM: compare ratios within "
        "one report, not absolute figures across reports.",
        "",
        "## 1. The ceiling (no HTTP)",
        "",
        limit.markdown(ceiling),
        "",
        "## 2-5. Servers under HTTP load",
        "",
        f"Multipart upload of a 512×512 JPEG photo ({len(photo_jpeg()) // 1000} KB) by "
        "`wrk -t1`, keep-alive connections = concurrency. `images/s` counts 2xx answers "
        "only. `server CPU ms/image` is the CPU time (every thread and worker, from "
        "`/proc`) the server spent per answered image, the efficiency figure that noise "
        "on a shared VM disturbs least; `server cores` is that CPU over the run's "
        "duration. `wrk CPU` is the load generator's share of one core.",
        "",
        http_bench.markdown(http),
        "",
        "## 6. Overload: shedding, not collapsing",
        "",
        "Saturation = the gateway's images/s with `wrk` at 32 connections (same upload). "
        "Then an open-loop generator (`bench/overload.py`) offers requests at 1× and 2× "
        "that rate for the same duration, whatever the answers. Goodput counts 200s.",
        "",
        overload.markdown(shed),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {what} | {measured} | {'yes' if ok else 'no'} |" for what, measured, ok in rows),
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "README.md").write_text("\n".join(report), encoding="utf-8")
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / "all.json").write_text(
        json.dumps({"limit": ceiling, "http": http, "overload": shed}, indent=2)
    )
    print("\n".join(report))


if __name__ == "__main__":
    main()
