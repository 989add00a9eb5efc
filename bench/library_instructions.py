"""Machine instructions per request of the observability library and its alternatives.

    .venv/bin/python -m bench.library_instructions [--requests 2000]

The same apps as `bench.library_overhead` (one small FastAPI route driven in process),
each run in a process of its own under valgrind's instruction counter (``cachegrind``,
no cache simulation): once with only its warm-up, once with ``--requests`` more
requests; the difference divided by ``--requests`` is what one request costs. Every
thread of the process is counted (span export included). Unlike CPU time on a shared
VM, where the same code measures ±15 µs apart from one process to the next, the count
is the same on every run to a few hundred instructions; it leaves out what the kernel
does (the access line's one ``write``) and what a cache miss costs, so it ranks the
variants by the work they do, not by their time. Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from bench.common import machine
from bench.library_overhead import INSTRUMENTATOR, VARIANTS, _drive, started

#: Requests each app serves before the counted ones (routes compiled, caches filled).
WARM_UP = 300
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def _serve(name: str, requests: int) -> None:
    """In the counted child: build ``name``'s app, warm it up, serve ``requests``."""
    build, _ = VARIANTS[name]
    variant = build()
    loop = asyncio.new_event_loop()
    lifespan = loop.run_until_complete(started(variant.app))  # as a server starts it
    loop.run_until_complete(_drive(variant, WARM_UP))
    if requests:
        loop.run_until_complete(_drive(variant, requests))
    lifespan.cancel()
    loop.close()


def _instructions(valgrind: str, name: str, requests: int) -> int:
    """Instructions a child process that serves ``requests`` of ``name`` executes."""
    completed = subprocess.run(  # noqa: S603 - fixed argument list
        [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-m", "bench.library_instructions", "--child", name, str(requests)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    found = _TOTAL.search(completed.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{completed.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _serve(args.child[0], int(args.child[1]))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (scripts/ensure_tools.sh valgrind)")
    per_request = {
        name: (_instructions(valgrind, name, args.requests) - _instructions(valgrind, name, 0))
        / args.requests
        for name in VARIANTS
    }
    bare = per_request["bare"]
    metrics_only = per_request[INSTRUMENTATOR] - bare
    print(f"# The observability library's instructions per request ({machine()})\n")
    print(f"`python -m bench.library_instructions --requests {args.requests}`; valgrind's"
          " instruction count, in-process ASGI, one small FastAPI route.\n")  # fmt: skip
    print(
        "| instrumentation | signals | instructions/request | overhead | × the instrumentator's |"
    )
    print("|---|---|---:|---:|---:|")
    for name, count in per_request.items():
        extra = count - bare
        print(
            f"| {name} | {VARIANTS[name][1]} | {count / 1000:.1f} k | {extra / 1000:.1f} k | "
            f"{extra / metrics_only:.2f} |"
        )


if __name__ == "__main__":
    main()
