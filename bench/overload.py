"""Overload: at twice its saturation rate, does the gateway shed load or collapse?

The saturation throughput S is the gateway's answered images/s under a closed loop
(`wrk`, 32 connections) on a capacity server whose queue is bounded by its size only
(no refusal at 32 connections). Then an open-loop generator offers requests at a fixed
rate, S and 2×S, whatever the answers: requests arrive on schedule even when the server
is behind, as they do from many independent users. The goodput at 2×S — 200s answered
within the latency objective (``SLO_LATENCY_P99_SECONDS``, 300 ms), per second of the
offered load — should stay at ≥ 90% of S: refused requests get a quick 503, the
admitted ones are served at full speed and in time. (200s are also reported whatever
their latency.) The generator is asyncio over raw keep-alive sockets; its CPU share is
reported because it runs on the same two cores.

The capacity server and every compared configuration run side by side, started once.
S is measured right before and right after each configuration's open loops (the order
rotating per repeat), and that configuration's ratio is taken against the mean of the
two: on a shared VM the capacity moves by a fifth within minutes, and a ratio against
an S measured minutes earlier carried that. ``--versus NAME=VALUE,...`` (repeatable)
adds a configuration: ``--versus MAX_QUEUE_WAIT_MS=0`` is the admission before the
queue was bounded by the latency objective.

    .venv/bin/python -m bench.overload [--seconds 10] [--repeats 3] [--versus K=V,...]...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import uvloop

from bench.common import RAW, median, photo_jpeg
from bench.http_bench import (
    BOUNDARY,
    GATEWAY_QUIET,
    OBS_ON,
    RunningServer,
    Target,
    _script,
    multipart_body,
    run_wrk,
    server,
    tree_cpu_seconds,
)

GATEWAY = Target("gateway onnxruntime, defaults", "gateway", {**OBS_ON, **GATEWAY_QUIET})
#: The latency objective a 200 must meet to count as goodput (SLO_LATENCY_P99_SECONDS).
SLO_SECONDS = 0.3
#: Most sockets the generator opens; beyond, a request waits for a free one (and the
#: offered rate would fall: the report shows the achieved rate).
MAX_CONNECTIONS = 512


class _Pool:
    """Idle keep-alive connections to one server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = asyncio.Semaphore(MAX_CONNECTIONS)

    async def request(self, payload: bytes) -> int:
        """Send one request; return its status (0 when the connection failed).

        A kept-alive connection the server closed meanwhile fails before any answer:
        the request is then sent again on a new connection, as HTTP clients do.
        """
        async with self.open:
            if self.idle:
                status = await self._exchange(*self.idle.pop(), payload)
                if status:
                    return status
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return 0
            return await self._exchange(reader, writer, payload)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
    ) -> int:
        try:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            keep = True
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                if name.strip().lower() == b"connection" and b"close" in value.lower():
                    keep = False
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return 0
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status


async def _open_loop(url: str, rate: float, seconds: float, body: bytes) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    payload = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    pool = _Pool(host, int(port))
    loop = asyncio.get_running_loop()
    latencies: list[tuple[int, float]] = []

    async def one() -> None:
        started = loop.time()
        status = await pool.request(payload)
        latencies.append((status, loop.time() - started))

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = loop.time()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    sent_for = loop.time() - start
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for _, writer in pool.idle:
        writer.close()
    statuses = Counter(status for status, _ in latencies)
    ok = sorted(t for status, t in latencies if status == 200)
    in_time = sum(1 for t in ok if t <= SLO_SECONDS)
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    return {
        "offered_rps": rate,
        "achieved_rps": len(tasks) / sent_for,
        # Per second of offered load: every request offered then is answered by the
        # end, and the queue the server holds after the offer is bounded.
        "goodput_rps": in_time / sent_for,
        "ok_rps": statuses[200] / sent_for,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": ok[len(ok) // 2] * 1000 if ok else float("nan"),
        "p99_ms": ok[int(len(ok) * 0.99)] * 1000 if ok else float("nan"),
        "generator_cpu": cpu / elapsed,
        "elapsed": elapsed,
    }


def _measured(running: RunningServer, rate: float, seconds: float, body: bytes) -> dict[str, Any]:
    """One open loop, with the cores the server used meanwhile."""
    cpu_before = tree_cpu_seconds(running.pid)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the cheaper loop
        result = runner.run(_open_loop(running.url, rate, seconds, body))
    result["server_cores"] = (tree_cpu_seconds(running.pid) - cpu_before) / result["elapsed"]
    return result


#: What measures the capacity S: the defaults with the queue bounded by its size only,
#: so that a closed loop of 32 connections keeps the model busy without a refusal.
CAPACITY = Target(f"{GATEWAY.name}, capacity", "gateway", {**GATEWAY.env, "MAX_QUEUE_WAIT_MS": "0"})


def _capacity(running: RunningServer, script: Path, seconds: float) -> float:
    """The capacity S: answered images/s under a closed loop at 32 connections."""
    return float(run_wrk(running, script, 32, seconds)["rps"])


def _offered(running: RunningServer, seconds: float, body: bytes, rate: float) -> dict[str, Any]:
    """Open loops at 1× and 2× the capacity ``rate``."""
    at_1x = _measured(running, rate, seconds, body)
    time.sleep(2)
    at_2x = _measured(running, 2 * rate, seconds, body)
    time.sleep(2)
    return {"1x": at_1x, "2x": at_2x}


def run(seconds: float, repeats: int, versus: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The capacity server and each configuration's run side by side, started once.

    Each repeat measures S, then offers 1× and 2× S to a configuration, then measures
    S again before the next one (the order rotating per repeat): each configuration's
    ratio is taken against the mean of the capacities measured right before and right
    after it, so that a neighbour slowing the VM for a minute moves both sides of the
    ratio. Medians of the repeats.
    """
    body = multipart_body(photo_jpeg())
    configurations = {"defaults": GATEWAY}
    for other in versus:
        label = ",".join(f"{k}={v}" for k, v in other.items())
        configurations[label] = Target(
            f"{GATEWAY.name}, {label}", "gateway", {**GATEWAY.env, **other}
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configurations}
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        script = _script(workdir)
        capacity = stack.enter_context(server(CAPACITY, workdir))
        running = {
            name: stack.enter_context(server(target, workdir))
            for name, target in configurations.items()
        }
        for each in (capacity, *running.values()):
            run_wrk(each, script, 4, 2)  # warm-up
        names = list(configurations)
        for repeat in range(repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            before = _capacity(capacity, script, seconds)
            for name in order:
                offered = _offered(running[name], seconds, body, before)
                after = _capacity(capacity, script, seconds)
                runs[name].append(
                    {
                        "saturation_rps": (before + after) / 2,
                        "capacity_before_after": [before, after],
                        **offered,
                    }
                )
                before = after
    ratios = {
        name: median([r["2x"]["goodput_rps"] / r["saturation_rps"] for r in measured])
        for name, measured in runs.items()
    }
    return {
        "seconds": seconds,
        "repeats": repeats,
        "slo_seconds": SLO_SECONDS,
        "runs": runs["defaults"],
        "goodput_ratio_2x": ratios["defaults"],
        "versus": {name: {"runs": runs[name], "goodput_ratio_2x": ratios[name]}
                   for name in configurations if name != "defaults"},
    }  # fmt: skip


def _table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| run | offered | achieved offer | goodput (200 ≤ 300 ms /s) | of saturation "
        "| all 200s /s | statuses | p50 / p99 of 200s | server cores | generator CPU |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for n, r in enumerate(runs, start=1):
        s = r["saturation_rps"]
        for key in ("1x", "2x"):
            m = r[key]
            statuses = ", ".join(f"{k}: {v}" for k, v in m["statuses"].items())
            lines.append(
                f"| {n} | {key} × {s:.0f}/s | {m['achieved_rps']:.0f}/s "
                f"| {m['goodput_rps']:.0f} | {m['goodput_rps'] / s:.0%} | {m['ok_rps']:.0f} "
                f"| {statuses} | {m['p50_ms']:.0f} / {m['p99_ms']:.0f} ms "
                f"| {m['server_cores']:.2f} | {m['generator_cpu']:.0%} |"
            )
    return lines


def markdown(result: dict[str, Any]) -> str:
    """One row per run and offered load; the compared configuration's table after."""
    lines = _table(result["runs"])
    lines.append("")
    lines.append(
        f"Median goodput at 2× saturation: **{result['goodput_ratio_2x']:.0%}** of the "
        "saturation throughput answered 200 within the latency objective (target ≥ 90%)."
    )
    for name, other in result.get("versus", {}).items():
        lines += ["", f"The same runs' other configuration, `{name}` (right after each):", ""]
        lines += _table(other["runs"])
        lines += ["", f"Median goodput at 2× saturation: **{other['goodput_ratio_2x']:.0%}**."]
    return "\n".join(lines)


def main() -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        help="NAME=VALUE,... : another configuration, run beside the defaults (repeatable)",
    )
    args = parser.parse_args()
    versus = [dict(pair.split("=", 1) for pair in each.split(",") if pair) for each in args.versus]
    result = run(args.seconds, args.repeats, versus)
    print(markdown(result))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / "overload.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
