"""Where the gateway's Python time goes: py-spy samples of its workers under load.

    .venv/bin/python -m bench.gil_profile [--seconds 15] [--concurrency 32]

The default gateway (full observability, spans exported to the stand-in collector) and
the same with observability off are loaded in turn by ``wrk`` uploading the photo,
while ``py-spy record --gil`` samples every worker. Only samples of a thread that holds
the GIL count: the forward pass and JPEG decoding release it, so what is measured is
the Python work, which one worker can do on one core at a time. Each sample goes to
the part of the code nearest the top of its stack (`PARTS`, first match from the
innermost frame outwards), and the table gives milliseconds per answered image.
The stacks are written to ``bench/results/raw/`` for flame graphs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import RAW, machine
from bench.http_bench import DEFAULTS, OBS_OFF_NAME, Target, _script, run_wrk, server, targets

#: (part, path fragments of its source files), matched frame by frame from the innermost
#: outwards; the first frame that matches names the part a sample belongs to.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tracing (OpenTelemetry SDK, instrumentation)", (
        "/opentelemetry/", "golden_signals/tracing.py", "golden_signals/sampling.py")),
    ("metrics (prometheus_client)", (
        "/prometheus_client/", "inference_gateway/observability/metrics.py",
        "golden_signals/metrics.py")),
    ("logs (structlog, logging)", (
        "/structlog/", "/logging/", "inference_gateway/observability/logging.py",
        "golden_signals/logs.py")),
    ("request middleware (ids, access log, Server-Timing)", (
        "inference_gateway/observability/", "golden_signals/", "inference_gateway/api/access.py")),
    ("image decoding and preprocessing (the Python around the C work)", (
        "/PIL/", "inference_gateway/inference/preprocess.py")),
    ("batcher, forward pass call, top-k", ("inference_gateway/inference/",)),
    ("multipart parsing", ("/python_multipart/", "inference_gateway/api/multipart.py")),
    ("FastAPI, Starlette, pydantic, routes", (
        "/fastapi/", "/starlette/", "/pydantic", "inference_gateway/api/",
        "inference_gateway/errors.py")),
    ("thread hand-offs (threading, executors)", (
        "/threading.py", "/concurrent/futures/", "/queue.py")),
    ("uvicorn and asyncio (HTTP, the event loop)", (
        "/uvicorn/", "/asyncio/", "/uvloop/", "/httptools/")),
)  # fmt: skip
OTHER = "other"
RATE = 100  # samples per second and worker


def part_of(stack: list[str]) -> str:
    """The `PARTS` name of one sampled stack (frames outermost first)."""
    for frame in reversed(stack):
        for name, fragments in PARTS:
            if any(fragment in frame for fragment in fragments):
                return name
    return OTHER


def parse_raw(text: str) -> Counter[str]:
    """Samples per part from py-spy's raw (collapsed stack) output."""
    parts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[part_of(stack.split(";"))] += int(count)
    return parts


def _workers(pid: int) -> list[int]:
    """The uvicorn workers under ``pid`` (itself when it serves alone)."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return workers or [pid]


def _py_spy_binary() -> str:
    """py-spy from PATH or beside this Python (the bench extra installs it)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def _py_spy(py_spy: str, pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid``'s GIL holder into ``out`` for ``seconds``."""
    options = ["record", "--gil", "--nonblocking", "--full-filenames", "--format", "raw"]
    command = [py_spy, *options, "--pid", str(pid), "--duration", str(seconds),
               "--rate", str(RATE), "--output", str(out)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603


def profile(target: Target, seconds: int, connections: int, workdir: Path) -> dict[str, Any]:
    """Sample ``target``'s workers for ``seconds`` under ``wrk`` load.

    ``wrk`` runs 3 s longer than py-spy, which starts 1.5 s in, so the sampled window
    lies inside the load; images per second come from the whole ``wrk`` run, and a
    sampler that fell behind would make the figures low, not high.
    """
    py_spy = _py_spy_binary()  # found before anything starts
    script = _script(workdir)
    with server(target, workdir) as running:
        run_wrk(running, script, connections, 2)  # warm up
        result: dict[str, float] = {}
        load = threading.Thread(
            target=lambda: result.update(run_wrk(running, script, connections, seconds + 3))
        )
        load.start()
        time.sleep(1.5)
        outputs = {worker: workdir / f"stacks-{worker}.txt" for worker in _workers(running.pid)}
        spies = [_py_spy(py_spy, worker, seconds, out) for worker, out in outputs.items()]
        finished = [(spy.communicate()[1], spy.returncode) for spy in spies]
        load.join()
    for out, (stderr, code) in zip(outputs.values(), finished, strict=True):
        if code != 0 or not out.exists():
            message = stderr.decode(errors="replace").strip()
            raise SystemExit(f"py-spy could not sample {target.name} (exit {code}): {message}")
    if not result:
        raise SystemExit(f"wrk did not load {target.name}; see the output above")
    raw = "\n".join(out.read_text() for out in outputs.values())
    samples = parse_raw(raw)
    if not samples:
        raise SystemExit(f"py-spy took no samples of {target.name}'s workers")
    images = result["rps"] * seconds  # answered while the workers were sampled
    return {
        "rps": result["rps"],
        "workers": len(outputs),
        "samples": dict(samples),
        "ms_per_image": {part: n / RATE / images * 1000 for part, n in samples.items()},
        "gil_share": sum(samples.values()) / RATE / seconds / len(outputs),
        "stacks": raw,
    }


def markdown(results: dict[str, dict[str, Any]], seconds: int, connections: int) -> str:
    """One table: milliseconds of GIL-holding Python per image, by part and server."""
    names = list(results)
    lines = [
        f"py-spy (`record --gil`, {RATE} samples/s per worker, {seconds} s) on every "
        f"worker while `wrk` uploads the photo at {connections} connections. Milliseconds "
        "of Python holding the GIL per answered image, by the part of the code innermost "
        "on the sampled stack. The forward pass and the JPEG decoder itself release the "
        "GIL and do not appear. Wall-clock time with the GIL held: where a holder waited "
        "for a core the figures overstate CPU, and the export thread counts with the "
        "event loop.",
        "",
        "| part | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    parts = [name for name, _ in PARTS] + [OTHER]
    for part in parts:
        cells = [results[n]["ms_per_image"].get(part, 0.0) for n in names]
        if any(cells):
            lines.append(f"| {part} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    totals = [sum(results[n]["ms_per_image"].values()) for n in names]
    lines.append("| **all Python holding the GIL** | " + " | ".join(
        f"**{t:.2f}**" for t in totals) + " |")  # fmt: skip
    lines.append(
        "| share of each worker's time with the GIL held | "
        + " | ".join(f"{results[n]['gil_share']:.0%}" for n in names)
        + " |"
    )
    lines.append("| images/s while sampled | " + " | ".join(
        f"{results[n]['rps']:.0f}" for n in names) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Profile both configurations; print the table; keep the stacks."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    # The same servers, configured the same way, as in the HTTP benchmark's table.
    profiled = [t for t in targets(quick=True) if t.name in (DEFAULTS, OBS_OFF_NAME)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for target in profiled:
            results[target.name] = profile(target, args.seconds, args.concurrency, Path(tmp))
    RAW.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(results.values()):
        (RAW / f"gil_profile-{index}.stacks").write_text(result.pop("stacks"))
    (RAW / "gil_profile.json").write_text(json.dumps(results, indent=2))
    print(f"Machine: {machine()}\n")
    print(markdown(results, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
