"""Servers under HTTP load: the gateway in several configurations, a naive app, LitServe.

Each server runs in its own process on loopback; `wrk` (one thread, Debian's package)
posts the same multipart JPEG upload at a fixed number of connections. Every
configuration is measured ``--repeats`` times (servers restarted each time) and the
tables report medians. wrk's own CPU use is measured from its rusage.

    .venv/bin/python -m bench.http_bench [--seconds 8] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RAW, median, photo_jpeg, rotated

BOUNDARY = "benchboundary7d1c"
#: Pause after stopping a server: its teardown must not cost the next one.
SETTLE_SECONDS = 5

LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "non2xx": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True)
class Target:
    """One server configuration to load."""

    name: str
    kind: str  # gateway | naive | litserve | library
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    concurrency: tuple[int, ...] = (8, 32)


GATEWAY_QUIET = {"LOG_LEVEL": "WARNING"}
#: The default layout: one worker per core, each with one model thread, batches ≤ 4.
DEFAULTS = "gateway onnxruntime, defaults (1 worker per core, batch <= 4)"
OBS_OFF_NAME = "gateway onnxruntime, defaults, observability off"
SAMPLED_NAME = "gateway onnxruntime, defaults, traces 10% sampled"
NAIVE_NAME = "naive FastAPI, onnxruntime inline"
LATENCY_FIRST_NAME = "gateway onnxruntime, 1 worker x 2 threads (decode pool)"
PEER_NAME = "LitServe 0.2, onnxruntime, max_batch_size 8"
#: The servers the targets compare: run back to back in every repeat, right after a
#: measurement of the ceiling, so each repeat yields its own ratios (see `run`).
VERDICT = (DEFAULTS, OBS_OFF_NAME, NAIVE_NAME, PEER_NAME)
OBS_OFF = {"ENABLE_METRICS": "false", "ENABLE_TRACING": "false", "LOG_LEVEL": "WARNING"}
OBS_ON = {"ENABLE_METRICS": "true", "ENABLE_TRACING": "true", "LOG_LEVEL": "INFO"}
ONE_PROCESS = {"WORKERS": "1"}
SAMPLED_10 = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def targets(quick: bool) -> list[Target]:
    """The benchmark matrix (a reduced one with ``quick``)."""
    all_c = (1, 8, 32, 64)
    onnx = {"MODEL_BACKEND": "onnxruntime"}
    torch = {"MODEL_BACKEND": "torch"}
    matrix = [
        Target(DEFAULTS, "gateway", {**onnx, **OBS_ON}, concurrency=all_c),
        Target("gateway onnxruntime, batching off", "gateway",
               {**onnx, **OBS_ON, "MAX_BATCH_SIZE": "1"}, concurrency=all_c),
        Target(OBS_OFF_NAME, "gateway", {**onnx, **OBS_OFF}, concurrency=(1, 8, 32)),
        Target(SAMPLED_NAME, "gateway", {**onnx, **OBS_ON, **SAMPLED_10}, concurrency=(1, 32)),
        # Latency first: one image's forward pass spread over both cores.
        Target(LATENCY_FIRST_NAME, "gateway", {**onnx, **OBS_ON, "WORKERS": "1"},
               concurrency=(1, 8, 32)),
        Target("gateway torch, batching on", "gateway", {**torch, **OBS_ON}),
        Target("gateway torch, batching off", "gateway", {**torch, **OBS_ON, "MAX_BATCH_SIZE": "1"}),
        # One process each, their model threads sized to the whole machine.
        Target(NAIVE_NAME, "naive", {**onnx, **ONE_PROCESS}, concurrency=(1, 8, 32)),
        Target(PEER_NAME, "litserve", {**onnx, **ONE_PROCESS}),
    ]  # fmt: skip
    if quick:
        return [t for t in matrix if t.name != LATENCY_FIRST_NAME and "torch" not in t.name]
    return matrix


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class TraceSink:
    """A running `bench.otlp_sink`: where spans go, and its process."""

    url: str
    pid: int

    def spans(self) -> int:
        """How many spans have arrived so far."""
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as response:  # noqa: S310
            return int(json.load(response)["spans"])


@dataclass(frozen=True)
class RunningServer:
    """A started server: where to reach it, its process (the root of its tree), and
    the trace sink its spans go to (None when tracing is off)."""

    url: str
    pid: int
    sink: TraceSink | None = None


def _stat_cpu_seconds(stat: Path, tick: int) -> float:
    """utime + stime of one ``/proc/.../stat`` file, in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of ``pid`` and its descendants: every thread, and
    the processes' main threads alone.

    Read from ``/proc``: a server's CPU per answered request is the efficiency figure
    that noise on a shared VM disturbs least (throughput moves with the neighbours). In
    a gateway worker the main thread is the event loop; the forward passes and span
    export run in other threads, so the split says which side a cost is on.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total, main, stack = 0.0, 0.0, [pid]
    while stack:
        current = stack.pop()
        proc = Path(f"/proc/{current}")
        try:
            total += _stat_cpu_seconds(proc / "stat", tick)
            main += _stat_cpu_seconds(proc / "task" / str(current) / "stat", tick)
            for task in (proc / "task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(child) for child in children)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total, main


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) of ``pid`` and its descendants."""
    return tree_cpu(pid)[0]


@contextmanager
def server(target: Target, workdir: Path) -> Iterator[RunningServer]:
    """Start ``target`` on a free loopback port; yield where it runs; stop it."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "ENVIRONMENT": "production",
           "LOG_FORMAT": "json", **target.env}  # fmt: skip
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    with ExitStack() as stack:
        sink = None
        if target.kind == "gateway" and env.get("ENABLE_TRACING", "true").lower() == "true":
            sink = stack.enter_context(otlp_sink(workdir))
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = sink.url + "/v1/traces"
        yield from _serve(target, workdir, env, sink)


def _serve(
    target: Target, workdir: Path, env: dict[str, str], sink: TraceSink | None
) -> Iterator[RunningServer]:
    port = int(env["PORT"])
    if target.kind == "gateway":
        command = [sys.executable, "-m", "inference_gateway.cli", "serve", *target.args]
        probe = "/ready"
    elif target.kind == "naive":
        command = [sys.executable, "-m", "bench.naive_app", str(port)]
        probe = "/ready"
    elif target.kind == "library":  # `bench.library_app`, the variant in its env
        command = [sys.executable, "-m", "uvicorn", "bench.library_app:app", "--host",
                   "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
        probe = "/items/0"
    else:
        command = [sys.executable, "-m", "bench.litserve_app", str(port)]
        probe = "/health"
    log = (workdir / f"{target.kind}-{port}.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - fixed argument lists
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _ready(url + probe):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target.name} did not start; see {log.name}")
            time.sleep(0.2)
        yield RunningServer(url, process.pid, sink)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _stop_group(process.pid)
        log.close()
        time.sleep(SETTLE_SECONDS)  # let the machine settle before the next server
        wait_for_quiet()


@contextmanager
def otlp_sink(workdir: Path) -> Iterator[TraceSink]:
    """Start `bench.otlp_sink` on a free loopback port; stop it afterwards."""
    port = _free_port()
    log = (workdir / f"otlp-sink-{port}.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [sys.executable, "-m", "bench.otlp_sink", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    sink = TraceSink(f"http://127.0.0.1:{port}", process.pid)
    try:
        deadline = time.monotonic() + 30
        while not _ready(sink.url + "/stats"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OTLP sink did not start; see {log.name}")
            time.sleep(0.1)
        yield sink
    finally:
        process.kill()
        process.wait()
        log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int, grace: float = 10.0) -> None:
    """Wait for every process of the server's group to exit; kill what outlives ``grace``.

    A server's leader can exit while its children carry on: LitServe's inference worker
    kept one core busy for about 30 s after its server stopped, and the next server
    measured on what was left.
    """
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


def _busy_jiffies() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(threshold: float = 0.15, timeout: float = 60.0) -> None:
    """Wait until the machine's CPUs are at most ``threshold`` busy over half a second
    (giving up after ``timeout``): a stray process from an earlier server must not eat
    into the next one's measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy0, total0 = _busy_jiffies()
        time.sleep(0.5)
        busy1, total1 = _busy_jiffies()
        if (busy1 - busy0) / max(total1 - total0, 1) <= threshold:
            return


def run_wrk(
    running: RunningServer,
    script: Path,
    connections: int,
    seconds: float,
    path: str = "/predict",
) -> dict[str, float]:
    """One wrk run: throughput, latency percentiles, errors, wrk's CPU and the server's
    CPU per answered request."""
    url = running.url
    sink = running.sink
    sink_before = (tree_cpu_seconds(sink.pid), sink.spans()) if sink is not None else (0.0, 0)
    server_before, main_before = tree_cpu(running.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    completed = subprocess.run(  # noqa: S603 - fixed argument list
        [wrk, "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--timeout", "30s",
         "-s", str(script), f"{url}{path}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after, main_after = tree_cpu(running.pid)
    server_cpu, main_cpu = server_after - server_before, main_after - main_before
    # Spans still in the server's batch queue arrive later: a run's count is approximate.
    sink_after = (tree_cpu_seconds(sink.pid), sink.spans()) if sink is not None else (0.0, 0)
    stats = json.loads(completed.stdout.strip().splitlines()[-1])
    duration = stats["duration_us"] / 1e6
    failed = stats["errors"] + stats["non2xx"]
    answered = max(stats["requests"] - failed, 1)
    return {
        "rps": (stats["requests"] - failed) / duration,
        "p50_ms": stats["p50_us"] / 1000,
        "p95_ms": stats["p95_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "error_rate": failed / max(stats["requests"], 1),
        "wrk_cpu": (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / duration,
        "server_cpu_ms": server_cpu / answered * 1000,
        "main_cpu_ms": main_cpu / answered * 1000,
        "server_cores": server_cpu / duration,
        "sink_cpu": (sink_after[0] - sink_before[0]) / duration,
        "spans_per_image": (sink_after[1] - sink_before[1]) / answered,
    }


def multipart_body(image: bytes) -> bytes:
    """``image`` as the ``file`` field of a multipart body with `BOUNDARY`."""
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _script(workdir: Path) -> Path:
    body = multipart_body(photo_jpeg())
    body_path = workdir / "body.bin"
    body_path.write_bytes(body)
    script = workdir / "upload.lua"
    script.write_text(LUA.format(body=body_path, boundary=BOUNDARY))
    return script


def run(
    seconds: float,
    repeats: int,
    quick: bool,
    ceiling_probe: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Every target at every concurrency, ``repeats`` times; raw runs and medians.

    Each repeat runs the `VERDICT` servers back to back (their order rotated), just
    after ``ceiling_probe`` (one measurement of the ceiling's best layout), then the
    rest (also rotated). Neighbours on a shared VM move throughput by a third within
    minutes; ratios taken within one repeat, a minute apart, cancel most of that, and
    ``paired`` keeps them per repeat.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    ceilings: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        script = _script(workdir)
        matrix = targets(quick)
        block = [t for t in matrix if t.name in VERDICT]
        rest = [t for t in matrix if t.name not in VERDICT]
        for repeat in range(repeats):
            if ceiling_probe is not None:
                wait_for_quiet()
                ceilings.append(ceiling_probe())
            for target in rotated(block, repeat) + rotated(rest, repeat):
                with server(target, workdir) as running:
                    run_wrk(running, script, 4, 2)  # warm-up
                    for c in target.concurrency:
                        result = run_wrk(running, script, c, seconds)
                        runs.setdefault(target.name, {}).setdefault(str(c), []).append(result)
    medians = {
        name: {c: {k: median([r[k] for r in rs]) for k in rs[0]} for c, rs in by_c.items()}
        for name, by_c in runs.items()
    }
    return {
        "seconds": seconds,
        "repeats": repeats,
        "runs": runs,
        "median": medians,
        "paired": paired(runs, ceilings),
    }


def paired(
    runs: dict[str, dict[str, list[dict[str, float]]]], ceilings: list[float]
) -> dict[str, list[float]]:
    """The targets' ratios, one per repeat, each from servers measured in that repeat."""

    def cell(name: str, c: int, key: str) -> list[float]:
        return [r[key] for r in runs.get(name, {}).get(str(c), [])]

    def pairs(a: list[float], b: list[float]) -> list[tuple[float, float]]:
        """Repeat by repeat; a server missing from the run gives no pairs, and lists
        of different lengths (repeats that cannot be matched) are an error."""
        return list(zip(a, b, strict=True)) if a and b else []

    gateway32 = cell(DEFAULTS, 32, "rps")
    ratios: dict[str, list[float]] = {"ceiling": list(ceilings)}
    ratios["of_ceiling"] = [g / c for g, c in pairs(gateway32, ceilings) if c]
    for key, name in (("over_naive", NAIVE_NAME), ("over_peer", PEER_NAME)):
        ratios[key] = [g / o for g, o in pairs(gateway32, cell(name, 32, "rps")) if o]
    off32 = cell(OBS_OFF_NAME, 32, "rps")
    ratios["obs_cost"] = [1 - g / o for g, o in pairs(gateway32, off32) if o]
    on1, off1 = cell(DEFAULTS, 1, "p50_ms"), cell(OBS_OFF_NAME, 1, "p50_ms")
    ratios["obs_p50_ms"] = [g - o for g, o in pairs(on1, off1)]
    return ratios


def markdown(result: dict[str, Any]) -> str:
    """One table: every target and concurrency, medians."""
    lines = [
        "| server | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors "
        "| server CPU ms/image | of which main threads | server cores | wrk CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_c in result["median"].items():
        for c, m in by_c.items():
            lines.append(
                f"| {name} | {c} | {m['rps']:.0f} | {m['p50_ms']:.0f} | {m['p95_ms']:.0f} "
                f"| {m['p99_ms']:.0f} | {m['error_rate']:.1%} | {m['server_cpu_ms']:.1f} "
                f"| {m['main_cpu_ms']:.1f} | {m['server_cores']:.2f} | {m['wrk_cpu']:.0%} |"
            )
    defaults = result["median"].get(DEFAULTS, {}).get("32")
    sinks = [m.get("sink_cpu", 0.0) for by_c in result["median"].values() for m in by_c.values()]
    if defaults and defaults.get("spans_per_image"):
        lines.append(
            f"\nSpans the OTLP sink received per answered image (defaults, c=32; spans of "
            f"one run can arrive in the next): {defaults['spans_per_image']:.1f}. The sink "
            f"used at most {max(sinks):.1%} of a core."
        )
    return "\n".join(lines)


def main() -> None:
    """Run the matrix and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.seconds, args.repeats, args.quick)
    print(markdown(result))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / "http.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
