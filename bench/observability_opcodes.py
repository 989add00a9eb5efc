"""Where the gateway's observability work is, counted: Python bytecode instructions per
`/predict`, with observability on and off, by module and function.

    .venv/bin/python -m bench.observability_opcodes [--requests 100] [--top 25]

Each configuration runs in a process of its own: the app in process (`create_app`, the
instant model of `bench.telemetry_overhead`, one worker, JSON logs), 50 warm-up uploads
of the bench photograph, then ``--requests`` counted ones, with a trace function that
counts every bytecode instruction executed, by the function it belongs to, in the event
loop and in the app's own threads (started after the counting is set up). "On" is
metrics, tracing (tail sampling, nothing exported) and INFO logs; "off" is metrics and
tracing off and logs at WARNING (the library's middleware runs in both). The count is
the same on every run; it ranks where the work is, not what it costs in time (a C call
such as an orjson dump or a bucket search is one instruction here).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from bench.common import photo_jpeg
from bench.http_bench import BOUNDARY, multipart_body
from bench.telemetry_overhead import _call, _loader

WARM_UP = 50


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_name}"


def _count(on: bool, requests: int) -> dict[str, float]:
    """Bytecode instructions per request, by function, in this process."""
    from inference_gateway.app import create_app
    from inference_gateway.config import Settings

    os.environ["OTEL_TRACES_EXPORTER"] = "none"
    settings = Settings(
        _env_file=None, workers=1, log_format="json", log_level="INFO" if on else "WARNING",
        enable_metrics=on, enable_tracing=on,
    )  # fmt: skip
    counts: collections.Counter[str] = collections.Counter()
    counting = False

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and counting:
            counts[_where(frame)] += 1
        return tracer

    with open(os.devnull, "w") as null:  # the app's log lines
        sys.stdout = null
        app = create_app(settings, model_loader=_loader)
        body = multipart_body(photo_jpeg())
        content_type = f"multipart/form-data; boundary={BOUNDARY}"

        async def drive() -> None:
            nonlocal counting
            threading.settrace(tracer)  # the app's threads, started with its lifespan
            async with app.router.lifespan_context(app):
                while not app.state.registry.resolve().ready:
                    await asyncio.sleep(0.01)
                for _ in range(WARM_UP):
                    assert await _call(app, "POST", "/predict", body, content_type) == 200
                sys.settrace(tracer)
                counting = True
                for _ in range(requests):
                    assert await _call(app, "POST", "/predict", body, content_type) == 200
                counting = False
                sys.settrace(None)
            threading.settrace(None)

        asyncio.run(drive())
        sys.stdout = sys.__stdout__
    return {where: n / requests for where, n in counts.items()}


def _child(mode: str, requests: int) -> dict[str, float]:
    """`_count` in a process of its own (settings and logging are per process)."""
    completed = subprocess.run(  # noqa: S603 - fixed argument list
        [sys.executable, "-m", "bench.observability_opcodes", "--child", mode,
         "--requests", str(requests)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    counts: dict[str, float] = json.loads(completed.stdout.splitlines()[-1])
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_count(args.child == "on", args.requests)))
        return
    runs = {mode: _child(mode, args.requests) for mode in ("off", "on")}
    on, off = runs["on"], runs["off"]
    extra = {k: on.get(k, 0.0) - off.get(k, 0.0) for k in on.keys() | off.keys()}
    modules: dict[str, float] = collections.defaultdict(float)
    for where, n in extra.items():
        modules[where.rsplit(":", 1)[0]] += n
    total_on, total_off = sum(on.values()), sum(off.values())
    print("# Observability's work per `/predict`, in bytecode instructions\n")
    print(f"`python -m bench.observability_opcodes --requests {args.requests}`: the instant"
          " model, one worker, in process (see the module's docstring).\n")  # fmt: skip
    print(f"- off: {total_off:,.0f} a request; on: {total_on:,.0f} "
          f"(+{total_on - total_off:,.0f}, +{(total_on / total_off - 1) * 100:.0f}%)\n")  # fmt: skip
    print("| module | instructions added per request |\n|---|---:|")
    for module, n in sorted(modules.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {module} | {n:,.0f} |")
    print("\n| function | instructions added per request |\n|---|---:|")
    for where, n in sorted(extra.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"| {where} | {n:,.0f} |")


if __name__ == "__main__":
    main()
