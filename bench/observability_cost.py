"""What the gateway's observability costs: server CPU per image with all of it and none.

Three servers run side by side with the built-in model, two workers each (the
default): one with metrics, JSON logs at INFO and tracing (tail sampling, spans sent
over OTLP to a local sink whose CPU is not counted: in production the collector runs
elsewhere), one with all three off (metrics off, tracing off, logs at WARNING), and a
second one with all off, the A/A control. `bench.paired` loads them in rotating turns
with a closed loop of ``wrk`` at 32 connections sending one real JPEG photograph; the
cost is the median over rounds of on / off - 1 with a 90% bootstrap interval. The
target is at most 3% more CPU per image with observability on. Two servers that are
alike differ by their own luck (where their processes run, what their caches hold: the
A/A control has measured up to +2.4%), so the cost is also given against the mean of
both servers with it off, where one server's luck weighs half. ``--parts`` adds three
servers, each with observability on but for one signal (metrics off, tracing off,
logs at WARNING), to see what each signal costs.

    .venv/bin/python -m bench.observability_cost [--seconds 6] [--rounds 10] [--parts]
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.http_bench import OBS_OFF, OBS_ON, Target, _script
from bench.paired import (
    CONNECTIONS,
    NO_REFUSALS,
    cost_line,
    cpu_ratios,
    medians_table,
    result_head,
    rotating_turns,
    side_by_side,
)
from bench.paired import main as paired_main

ON, OFF, CONTROL = (
    "observability on (metrics, logs, traces)",
    "observability off",
    "A/A control (off)",
)
CONFIGURATIONS = {ON: OBS_ON, OFF: OBS_OFF, CONTROL: OBS_OFF}
#: With ``--parts``: observability on but for one signal, to see what each costs.
PARTS = {
    "on, metrics off": {**OBS_ON, "ENABLE_METRICS": "false"},
    "on, tracing off": {**OBS_ON, "ENABLE_TRACING": "false"},
    "on, logs at WARNING": {**OBS_ON, "LOG_LEVEL": "WARNING"},
}


def run(seconds: float, rounds: int, parts: bool = False) -> dict[str, Any]:
    """The servers up together, loaded in rotating turns; per-round ratios of CPU per
    image against "off" (``parts``: three more servers, each with one signal off)."""
    with tempfile.TemporaryDirectory(prefix="bench-obs-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        script = _script(workdir)
        targets = {
            name: Target(name, "gateway", {**env, **NO_REFUSALS})
            for name, env in {**CONFIGURATIONS, **(PARTS if parts else {})}.items()
        }
        running = side_by_side(stack, workdir, script, targets)
        measured = {name: (target, "/predict") for name, target in running.items()}
        runs = rotating_turns(measured, script, rounds, seconds)
    return {
        **result_head(seconds, rounds, runs),
        "cpu_ratios": cpu_ratios(runs[ON], runs[OFF]),
        "control_ratios": cpu_ratios(runs[CONTROL], runs[OFF]),
        "both_off_ratios": [
            2 * on["server_cpu_ms"] / (off["server_cpu_ms"] + control["server_cpu_ms"])
            for on, off, control in zip(runs[ON], runs[OFF], runs[CONTROL], strict=True)
        ],
        "part_ratios": {name: cpu_ratios(runs[name], runs[OFF]) for name in PARTS if parts},
    }


def markdown(result: dict[str, Any]) -> str:
    """A row per server (medians), the paired cost and the A/A control."""
    return "\n".join(
        [
            "# The gateway's observability: CPU per image with all of it and none",
            "",
            f"`.venv/bin/python -m bench.observability_cost --seconds {result['seconds']:g} "
            f"--rounds {result['rounds']}`, {machine()}, {result['when']}: three servers "
            "side by side (see the module's docstring), each loaded in turn every round by "
            f'`wrk` at {CONNECTIONS} connections; medians, and per-round ratios against "off".',
            "",
            *medians_table(result["runs"], "server"),
            "",
            cost_line("CPU per image with observability on", result["cpu_ratios"]),
            cost_line("A/A control (two servers with it off)", result["control_ratios"]),
            cost_line(
                "CPU per image with observability on against both servers with it off (their mean)",
                result["both_off_ratios"],
            ),
            *(cost_line(name, ratios) for name, ratios in result["part_ratios"].items()),
            spans_line(result["runs"][ON]),
            "",
            "Target: at most +3% with observability on.",
        ]
    )


def spans_line(rounds: list[dict[str, float]]) -> str:
    """The spans the "on" server exported per image in each round (tail sampling keeps
    every slow request's trace, so a round whose tail was slow exports more)."""
    per_round = ", ".join(f"{r['spans_per_image']:.2f}" for r in rounds)
    return f"- Spans exported per image with observability on, by round: {per_round}"


def main() -> None:
    """Run and print the table."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--parts", action="store_true", help="also each signal off alone")

    paired_main(
        "observability_cost",
        lambda a: run(a.seconds, a.rounds, a.parts),
        markdown,
        rounds=10,
        options=options,
    )


if __name__ == "__main__":
    main()
