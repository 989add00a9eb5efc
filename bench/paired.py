"""A configuration's cost, paired: servers side by side, loaded in rotating turns.

Servers that stay up are loaded one at a time by a closed loop of ``wrk``, a few
seconds each, the order rotating every round. Every measurement of one server is then
paired with one of the other taken seconds apart, so a neighbour's noise on a shared VM
hits both alike. The cost is the median over rounds of a / b - 1, with a 90% bootstrap
interval; an A/A control (a second server configured like the baseline) says how large
a difference the harness sees when there is none.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import RAW, median, rotated
from bench.http_bench import RunningServer, Target, run_wrk, server

CONNECTIONS = 32
#: A closed loop of 32 connections queues more than `MAX_QUEUE_WAIT_MS` allows: its
#: refusals would be CPU charged to the answered images. Bounded by the queue's size
#: only, every request is answered and the CPU per image is the pipeline's own.
NO_REFUSALS = {"MAX_QUEUE_WAIT_MS": "0"}

#: What is measured: a name, and the server and path that name loads.
Measured = dict[str, tuple[RunningServer, str]]


def rotating_turns(
    measured: Measured,
    script: Path,
    rounds: int,
    seconds: float,
    connections: int = CONNECTIONS,
    observe: Callable[[RunningServer], dict[str, float]] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Every round, each measurement in turn (the order rotating); wrk's results, and
    what ``observe`` reads from the server after its turn (read before it too, so that
    it covers the turn alone)."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in measured}
    for turn in range(rounds):
        for name in rotated(list(measured), turn):
            target, path = measured[name]
            if observe is not None:
                observe(target)
            result = run_wrk(target, script, connections, seconds, path)
            if observe is not None:
                result.update(observe(target))
            runs[name].append(result)
    return runs


def cpu_ratios(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    """Per round, server CPU per image of ``a`` over ``b``'s."""
    return [x["server_cpu_ms"] / y["server_cpu_ms"] for x, y in zip(a, b, strict=True)]


def overhead_ratio(
    ours: list[float], theirs: list[float], base: list[float], per: str
) -> str | None:
    """Our overhead over ``base`` against theirs, paired by ``per`` ("round",
    "repeat"): the median ratio and its 90% interval as a sentence; None when no pair
    gave theirs an overhead (a pair where it cost nothing over bare gives no ratio)."""
    ratios = [(o - b) / (t - b) for o, t, b in zip(ours, theirs, base, strict=True) if t > b]
    if not ratios:
        return None
    low, high = interval(ratios)
    return (
        f"Overhead of all three signals against the instrumentator's metrics alone, per "
        f"{per}: **{median(ratios):.2f}×** (90% interval {low:.2f}–{high:.2f}, "
        f"{len(ratios)} of {len(base)} {per}s)."
    )


def interval(ratios: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 90% bootstrap interval of the median of ``ratios``."""
    rng = random.Random(seed)  # noqa: S311 - resampling, not a secret
    medians = sorted(median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]


def medians_table(
    runs: dict[str, list[dict[str, float]]], what: str, connections: int = CONNECTIONS
) -> list[str]:
    """A markdown row of medians per measurement."""
    lines = [
        f"| {what} (c={connections}) | images/s | p50 ms | p99 ms | server CPU ms/image |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, results in runs.items():
        m = {key: median([r[key] for r in results]) for key in results[0]}
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.0f} "
            f"| {m['server_cpu_ms']:.2f} |"
        )
    return lines


def cost_line(label: str, ratios: list[float]) -> str:
    """``label``: the median cost, its interval and every round's."""
    low, high = interval(ratios)
    return (
        f"- {label}: **{median(ratios) - 1:+.1%}** (90% interval {low - 1:+.1%} to "
        f"{high - 1:+.1%}; {len(ratios)} rounds: "
        f"{', '.join(f'{r - 1:+.1%}' for r in ratios)})"
    )


def side_by_side(
    stack: ExitStack, workdir: Path, script: Path, targets: Mapping[str, Target]
) -> dict[str, RunningServer]:
    """Every target's server started (kept up by ``stack``) and warmed up, by name."""
    running = {}
    for name, target in targets.items():
        running[name] = stack.enter_context(server(target, workdir))
        run_wrk(running[name], script, 4, 2)  # warm-up
    return running


def result_head(seconds: float, rounds: int, runs: dict[str, Any]) -> dict[str, Any]:
    """What every paired result starts with: when, the turns' length and count, the runs."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "rounds": rounds,
        "runs": runs,
    }


def main(
    name: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    rounds: int,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """A paired benchmark's command line: ``--seconds`` and ``--rounds`` (and
    ``options``' own), the table printed, the raw result in ``RAW/<name>.json``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=rounds)
    if options is not None:
        options(parser)
    result = run(parser.parse_args())
    print(markdown(result))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"{name}.json").write_text(json.dumps(result, indent=2))
