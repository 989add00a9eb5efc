"""The observability library's CPU per request in a real server: uvicorn over loopback.

`bench.library_overhead` drives the app in process, without sockets: a request there
makes no system call at all but the library's access line, so that one write pays alone
for what a kernel entry costs the code after it (the processor's caches and branch
history; measured here about 6 µs a request, against 0.3 µs for the write itself in a
loop). A server makes several per request anyway (reading the request, sending the
answer, polling). Here the same small app (`bench.library_app`) runs under uvicorn (one
worker, no access log of its own) once bare and once with each instrumentation, all
up side by side, and ``wrk`` (one thread, ``--connections`` connections, a closed loop)
loads them in rotating turns (`bench.paired`). Each turn's figure is the server's CPU
time (every thread, from ``/proc``) per answered request; overheads are paired
differences from the bare server's turn of the same round, and the ratio of ours to
prometheus-fastapi-instrumentator's per round has a 90% bootstrap interval. A second
bare server is the A/A control: the difference the harness sees when there is none.
The library's access lines go to the server's stdout, a file.

With ``--split`` every server also times, inside itself, the instrumentation's own code,
the app and framework around and inside it, and uvicorn's ``send`` (`bench.library_split`);
a second table gives each part's added time over the bare server's, with the rest of the
event loop thread's CPU and the other threads'.

    .venv/bin/python -m bench.library_server [--seconds 5] [--rounds 10] [--connections 8] [--split]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import library_split
from bench.common import machine
from bench.http_bench import LUA, Target, run_wrk, server
from bench.library_overhead import INSTRUMENTATOR, OURS
from bench.paired import overhead_ratio, rotating_turns

#: wrk's script: a GET, and the summary line `run_wrk` reads.
GET_LUA = LUA[LUA.index("done = function") :].format()
PATH = "/items/7"
BARE, CONTROL, OTEL = "bare", "bare (A/A control)", "OpenTelemetry FastAPIInstrumentor"
SERVERS = {
    BARE: ("bare", "none"),
    CONTROL: ("bare", "none"),
    OURS: ("golden-signals", "metrics, logs, traces"),
    INSTRUMENTATOR: ("instrumentator", "metrics"),
    OTEL: ("opentelemetry", "traces"),
}


#: With ``--parts``: ours with one part changed each, to see what each part costs.
PARTS = {
    name: (name, "metrics, logs, traces")
    for name in (
        "golden-signals, logs at WARNING",
        "golden-signals, lines to /dev/null",
        "golden-signals, tracing off",
        "golden-signals, each line at once",
        "golden-signals, traceparent on answers",
    )
}


def run(
    seconds: float, rounds: int, connections: int, parts: bool = False, split: bool = False
) -> dict[str, Any]:
    """Every server up (``parts``: and `PARTS`), loaded in rotating turns; each turn's
    wrk result (``split``: and the server's own clocks, `bench.library_split`)."""
    with tempfile.TemporaryDirectory(prefix="bench-library-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        script = workdir / "get.lua"
        script.write_text(GET_LUA)
        measured = {}
        for name, (variant, _) in {**SERVERS, **(PARTS if parts else {})}.items():
            env = {"LIBRARY_VARIANT": variant, **({"LIBRARY_SPLIT": "1"} if split else {})}
            target = Target(name, "library", env)
            running = stack.enter_context(server(target, workdir))
            run_wrk(running, script, connections, 2, PATH)  # warm-up
            measured[name] = (running, PATH)
        observe = library_split.read if split else None
        runs = rotating_turns(measured, script, rounds, seconds, connections, observe)
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "rounds": rounds,
        "connections": connections,
        "runs": runs,
    }


def _cpu_us(turn: dict[str, float]) -> float:
    return turn["server_cpu_ms"] * 1000


#: One figure of a turn (a request's CPU, or a part of it with `--split`), in µs.
Part = Callable[[dict[str, float]], float]


def _added(turns: list[dict[str, float]], bare: list[dict[str, float]], part: Part) -> float:
    """The median over rounds of ``part`` of a turn less the bare server's that round."""
    return statistics.median(part(t) - part(b) for t, b in zip(turns, bare, strict=True))


def markdown(result: dict[str, Any]) -> str:
    """The table: CPU per request, overhead over bare (paired by round), and the
    ratio of ours to the instrumentator's; with ``--split``, where the time goes."""
    runs = result["runs"]
    split = "own_us" in runs[BARE][0]
    bare = [_cpu_us(turn) for turn in runs[BARE]]
    lines = [
        f"# The observability library's CPU per request under uvicorn"
        f"{', timed by part' if split else ''} ({machine()})\n",
        f"`python -m bench.library_server --seconds {result['seconds']:g} --rounds "
        f"{result['rounds']} --connections {result['connections']}{' --split' if split else ''}`"
        f" ({result['when']}); one "
        f"uvicorn worker per variant, wrk's closed loop of {result['connections']} "
        f"connections on `GET {PATH}`, server CPU (every thread) per answered request, "
        "medians over the rounds.\n",
        "| instrumentation | signals | CPU µs/request | overhead µs/request | requests/s |",
        "|---|---|---:|---:|---:|",
    ]
    for name, (_, signals) in {**SERVERS, **PARTS}.items():
        if name not in runs:
            continue
        cpu = [_cpu_us(turn) for turn in runs[name]]
        extra = _added(runs[name], runs[BARE], _cpu_us)
        rps = statistics.median(turn["rps"] for turn in runs[name])
        lines.append(
            f"| {name} | {signals} | {statistics.median(cpu):.1f} | {extra:.1f} | {rps:.0f} |"
        )
    ours = [_cpu_us(turn) for turn in runs[OURS]]
    theirs = [_cpu_us(turn) for turn in runs[INSTRUMENTATOR]]
    ratio = overhead_ratio(ours, theirs, bare, "round")
    if ratio is None:
        ratio = "No round gave the instrumentator an overhead: no ratio."
    lines.append(f"\n{ratio}")
    if split:
        lines += ["", *_split_table(runs)]
    return "\n".join(lines)


#: `--split`'s parts of a request (`bench.library_split`), in µs: the instrumentation's
#: own code; the app and framework around and inside it; uvicorn's ``send``; the rest
#: of the event loop thread's CPU (parsing, the loop, writing); the other threads' CPU.
SPLIT_PARTS: dict[str, Part] = {
    "own code": lambda turn: turn["own_us"],
    "app and framework": lambda turn: turn["app_us"],
    "uvicorn's send": lambda turn: turn["send_us"],
    "rest of the loop's thread": lambda turn: turn["main_cpu_ms"] * 1000 - turn["whole_us"],
    "other threads": lambda turn: (turn["server_cpu_ms"] - turn["main_cpu_ms"]) * 1000,
}


def _split_table(runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """Each part's time per request added over the bare server's (`SPLIT_PARTS`),
    paired by round, the bare server's own figures in its row."""
    lines = [
        "Where the time goes (`--split`: clocks inside each server, "
        "`bench.library_split`), µs per request: the bare server's own in its row, the "
        "others' added over it (medians of the paired differences, so a row's parts "
        "need not add up to its overhead above):\n",
        f"| instrumentation | {' | '.join(SPLIT_PARTS)} |",
        f"|---|{'---:|' * len(SPLIT_PARTS)}",
    ]
    bare = runs[BARE]
    for name, turns in runs.items():
        if name == BARE:
            cells = [
                f"{statistics.median(part(t) for t in turns):.1f}" for part in SPLIT_PARTS.values()
            ]
        else:
            cells = [f"{_added(turns, bare, part):+.1f}" for part in SPLIT_PARTS.values()]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--parts", action="store_true", help="ours with one part changed each")
    parser.add_argument(
        "--split", action="store_true", help="time each server's parts inside it too"
    )
    args = parser.parse_args()
    print(markdown(run(args.seconds, args.rounds, args.connections, args.parts, args.split)))


if __name__ == "__main__":
    main()
