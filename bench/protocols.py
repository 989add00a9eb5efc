"""What each way of asking for a prediction costs: /predict and the Open Inference Protocol,
over HTTP and gRPC.

    .venv/bin/python -m bench.protocols [--concurrency 8,32] [--seconds 8] [--repeats 3]

One gateway (defaults, full observability, ``GRPC_PORT`` set), the same 512x512 JPEG
photo, five requests that take turns within every repeat (their order rotated from one
repeat to the next): ``/predict`` with a multipart upload; ``/v2/.../infer`` with the
JPEG as a ``BYTES`` tensor in the binary extension (what `tritonclient` sends); the same
with the tensor preprocessed on the client side (``FP32``, binary); and gRPC
``ModelInfer`` with the JPEG as ``BYTES`` and with the ``FP32`` tensor, both in
``raw_input_contents`` (what ``tritonclient.grpc`` sends). Every request asks for the
top 5 classes (the classification extension).

wrk speaks HTTP/1.1 only: the gRPC calls come from a closed-loop generator in its own
process (``python -m bench.protocols grpc-client``, grpcio's asyncio API) that keeps
``concurrency`` calls in flight, one per channel and so one per TCP connection as wrk
keeps one request per connection, for ``--seconds``. It sends the serialized message as
it is and does not parse the answers (the first one is parsed and checked), so that it
costs little CPU; it still costs more than wrk, on a machine whose cores the server
needs, so besides images/s the table reports the server's CPU per image (from
``/proc``, every worker and thread), which the client's share does not move much, and
the client's own CPU. ``other cores`` is what else kept the machine's cores busy
during a run (the trace sink, the kernel's share of loopback networking, anything else
running): a run that shared the machine with other work shows it there. Each run waits
for a quiet machine first (`wait_for_quiet`) and is retaken (``--retakes``) when other
work took more than ``--other-cores`` during it. Failed requests are counted, never
dropped: the errors column shows the worst repeat's share, with gRPC's status codes,
and the run exits with 1.

The report (markdown) goes to stdout, progress to stderr, every run to
``bench/results/raw/protocols.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from bench.common import RAW, machine, median, photo_jpeg
from bench.http_bench import (
    BOUNDARY,
    LUA,
    OBS_ON,
    RunningServer,
    Target,
    _busy_jiffies,
    _free_port,
    multipart_body,
    run_wrk,
    server,
    tree_cpu,
    wait_for_quiet,
)
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
#: The RPC the gRPC requests call.
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: How many classes every request asks for (``class_count``).
CLASS_COUNT = 5
#: A request's deadline, as wrk's ``--timeout``.
TIMEOUT_SECONDS = 30
HEADERS_LUA = LUA.replace(
    'wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"', "{headers}"
)
COMMAND = ".venv/bin/python -m bench.protocols"
#: Busy cores beyond the server's and the client's above which a run is retaken: an idle
#: machine shows about 0.1 (the trace sink, the kernel's loopback networking).
OTHER_CORES = 0.3
#: How many times a run is retaken at most; the last take counts whatever it shows.
RETAKES = 2


@dataclass(frozen=True)
class Kind:
    """One way of asking: over HTTP, a wrk script and the path it posts to; over gRPC,
    the file that holds the serialized ``ModelInferRequest``."""

    name: str
    protocol: str  # http | grpc
    request: Path
    path: str = ""


def _infer_body(inputs: list[triton.InferInput]) -> tuple[bytes, int]:
    outputs = [triton.InferRequestedOutput("logits", class_count=CLASS_COUNT)]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, int(json_size)


def _infer_message(datatype: str, shape: list[int], content: bytes) -> bytes:
    """A ``ModelInferRequest`` as ``tritonclient.grpc`` builds it: the input in
    ``raw_input_contents``, ``InferRequestedOutput("logits", class_count=5)``."""
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", datatype
    tensor.shape.extend(shape)
    request.raw_input_contents.append(content)
    output = request.outputs.add()
    output.name = "logits"
    output.parameters["classification"].int64_param = CLASS_COUNT
    message: bytes = request.SerializeToString()
    return message


def kinds(workdir: Path) -> list[Kind]:
    """Every request kind, its request written under ``workdir``."""
    photo = photo_jpeg()
    tensor = prepare_image(photo, ImageLimits(), PreprocessConfig()).tensor[None]
    http: dict[str, tuple[bytes, dict[str, str], str]] = {}
    http["/predict, multipart JPEG"] = (
        multipart_body(photo),
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        "/predict",
    )
    images = triton.InferInput("input", [1], "BYTES")
    images.set_data_from_numpy(np.array([photo], dtype=np.object_))
    body, size = _infer_body([images])
    http["/v2 infer, BYTES JPEG (binary)"] = (
        body,
        {"Inference-Header-Content-Length": str(size)},
        INFER,
    )
    preprocessed = triton.InferInput("input", list(tensor.shape), "FP32")
    preprocessed.set_data_from_numpy(tensor, binary_data=True)
    body, size = _infer_body([preprocessed])
    http["/v2 infer, FP32 tensor (binary)"] = (
        body,
        {"Inference-Header-Content-Length": str(size)},
        INFER,
    )
    result: list[Kind] = []
    for n, (name, (content, headers, path)) in enumerate(http.items()):
        body_path = workdir / f"body-{n}.bin"
        body_path.write_bytes(content)
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = workdir / f"request-{n}.lua"
        script.write_text(HEADERS_LUA.format(body=body_path, headers=lines))
        result.append(Kind(name, "http", script, path))
    jpeg = serialize_byte_tensor(np.array([photo], dtype=np.object_)).item()
    grpc_messages = {
        "gRPC ModelInfer, BYTES JPEG": _infer_message("BYTES", [1], jpeg),
        "gRPC ModelInfer, FP32 tensor": _infer_message(
            "FP32", list(tensor.shape), np.ascontiguousarray(tensor, dtype="<f4").tobytes()
        ),
    }
    for n, (name, message) in enumerate(grpc_messages.items()):
        message_path = workdir / f"message-{n}.bin"
        message_path.write_bytes(message)
        result.append(Kind(name, "grpc", message_path))
    return result


# --- the gRPC load generator (its own process) ------------------------------------------


def _check_answer(answer: bytes) -> None:
    """The first answer must carry the top classes asked for."""
    response = service_pb2.ModelInferResponse.FromString(answer)
    shapes = {output.name: list(output.shape) for output in response.outputs}
    if shapes.get("logits") != [1, CLASS_COUNT] or len(response.raw_output_contents) != 1:
        raise RuntimeError(f"unexpected answer: outputs {shapes}")


async def _closed_loop(
    address: str, message: bytes, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Keep ``concurrency`` calls in flight for ``seconds``, once told to start (a line on
    stdin, after "ready" on stdout); the calls that answered OK, the failures by status
    code, latency percentiles and this process's CPU time."""
    import grpc

    # A local subchannel pool: every channel opens its own connection, as wrk does;
    # SO_REUSEPORT then spreads them over the server's workers.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(concurrency)]
    try:
        await asyncio.gather(
            *(asyncio.wait_for(c.channel_ready(), TIMEOUT_SECONDS) for c in channels)
        )
        # No serializers: the message goes out as it is, the answer comes back as bytes.
        calls = [channel.unary_unary(MODEL_INFER) for channel in channels]
        _check_answer(await calls[0](message, timeout=TIMEOUT_SECONDS))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        cpu_start, start = time.process_time(), time.perf_counter()
        deadline = start + seconds

        async def keep_calling(call: Any) -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await call(message, timeout=TIMEOUT_SECONDS)
                except grpc.aio.AioRpcError as exc:
                    failures[exc.code().name] += 1
                else:
                    latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(keep_calling(call) for call in calls))
        duration = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    quantiles = np.percentile(latencies, [50, 95, 99]) if latencies else np.zeros(3)
    return {
        "ok": len(latencies),
        "failures": dict(failures),
        "duration": duration,
        "cpu": cpu,
        "p50_ms": float(quantiles[0]) * 1000,
        "p95_ms": float(quantiles[1]) * 1000,
        "p99_ms": float(quantiles[2]) * 1000,
    }


def grpc_client(argv: list[str]) -> None:
    """``grpc-client ADDRESS MESSAGE CONCURRENCY SECONDS``: one closed-loop run; its
    result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog=f"{COMMAND} grpc-client")
    parser.add_argument("address")
    parser.add_argument("message", type=Path)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float)
    options = parser.parse_args(argv)
    result = asyncio.run(
        _closed_loop(
            options.address, options.message.read_bytes(), options.concurrency, options.seconds
        )
    )
    print(json.dumps(result), flush=True)


# --- the runs ---------------------------------------------------------------------------


@dataclass
class Run:
    """One measurement: images/s, latency, the server's and the client's CPU, failures."""

    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float
    server_cores: float
    client_cores: float
    other_cores: float
    error_rate: float
    failures: dict[str, int]


def run_grpc(
    running: RunningServer, address: str, message: Path, concurrency: int, seconds: float
) -> Run:
    """One closed-loop gRPC run from a separate process; the server's CPU is read just
    before the client starts calling and just after its last answer."""
    client = subprocess.Popen(  # noqa: S603 - fixed argument list
        [sys.executable, "-m", "bench.protocols", "grpc-client", address, str(message),
         str(concurrency), str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None
    assert client.stdout is not None
    line = ""
    try:
        if client.stdout.readline().strip() == "ready":
            machine_before, server_before = _busy_jiffies(), tree_cpu(running.pid)[0]
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline()
            machine_after, server_after = _busy_jiffies(), tree_cpu(running.pid)[0]
    finally:
        if not line:  # it did not start, or the run was cut short: no load after this
            client.kill()
        client.stdin.close()
        client.wait(timeout=TIMEOUT_SECONDS + 30)
    if client.returncode != 0 or not line:
        raise RuntimeError(f"the gRPC client against {address} failed ({client.returncode})")
    stats = json.loads(line)
    failures: dict[str, int] = stats["failures"]
    failed = sum(failures.values())
    duration = stats["duration"]
    server_cpu = server_after - server_before
    server_cores, client_cores = server_cpu / duration, stats["cpu"] / duration
    return Run(
        rps=stats["ok"] / duration,
        p50_ms=stats["p50_ms"],
        p99_ms=stats["p99_ms"],
        server_cpu_ms=server_cpu / max(stats["ok"], 1) * 1000,
        server_cores=server_cores,
        client_cores=client_cores,
        other_cores=_busy_cores(machine_before, machine_after) - server_cores - client_cores,
        error_rate=failed / max(stats["ok"] + failed, 1),
        failures=failures,
    )


def _busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were busy between two `_busy_jiffies` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / max(total, 1) * (os.cpu_count() or 1)


def run_http(running: RunningServer, kind: Kind, concurrency: int, seconds: float) -> Run:
    """One wrk run."""
    machine_before = _busy_jiffies()
    result = run_wrk(running, kind.request, concurrency, seconds, kind.path)
    machine_cores = _busy_cores(machine_before, _busy_jiffies())
    return Run(
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        server_cpu_ms=result["server_cpu_ms"],
        server_cores=result["server_cores"],
        client_cores=result["wrk_cpu"],
        other_cores=machine_cores - result["server_cores"] - result["wrk_cpu"],
        error_rate=result["error_rate"],
        failures={},
    )


def measure(
    running: RunningServer, grpc_address: str, kind: Kind, concurrency: int, seconds: float
) -> Run:
    """One run of ``kind`` at ``concurrency`` for ``seconds``, once the machine is quiet
    (or a minute has passed)."""
    wait_for_quiet()
    if kind.protocol == "grpc":
        return run_grpc(running, grpc_address, kind.request, concurrency, seconds)
    return run_http(running, kind, concurrency, seconds)


def _errors(runs: list[Run]) -> str:
    """The worst repeat's share of failed requests, with gRPC's codes over all repeats."""
    worst = max(r.error_rate for r in runs)
    if worst == 0:
        return "0"
    codes: Counter[str] = Counter()
    for r in runs:
        codes.update(r.failures)
    named = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
    return f"**{worst:.2%}**" + (f" ({named})" if named else "")


def report(
    runs: dict[tuple[str, int], list[Run]], options: argparse.Namespace, retaken: int
) -> str:
    """The results file: what was run, how to rerun it, the table of medians."""
    command = (
        f"{COMMAND} --concurrency {options.concurrency} --seconds {options.seconds:g} "
        f"--repeats {options.repeats}"
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    kept = sum(r.other_cores > options.other_cores for rs in runs.values() for r in rs)
    lines = [
        "# What each way of asking for a prediction costs",
        "",
        f"`{command}` (part of `make bench`): one gateway (defaults, full observability, "
        "`GRPC_PORT` set), the same 512x512 JPEG, the five requests taking turns within "
        f"each repeat (order rotated between repeats); medians of {options.repeats} "
        f"repeats, {options.seconds:g} s each. Every request asks for the top 5 classes. "
        "HTTP: `wrk -t1`, one request in flight per connection. gRPC: `ModelInfer` from a "
        "closed-loop grpcio (asyncio) client in its own process, one call in flight per "
        "channel (its own TCP connection), the message serialized once and answers not "
        "parsed. The client shares the machine's cores with the server and costs more CPU "
        "than wrk (`client cores`), leaving the server less: compare `server CPU "
        "ms/image` (every worker and thread, from `/proc`) rather than images/s. "
        "`other cores`: the machine's busy cores beyond the server's and the client's "
        "(the trace sink, the kernel's loopback networking, any other work on the "
        "machine); a run during which they exceeded "
        f"{options.other_cores:g} was retaken, up to {options.retakes} times ({retaken} "
        f"retaken for this report; {kept} of the runs kept are still above it). "
        "`errors`: the worst repeat's share of "
        f"failed requests. Run on {today} on {machine()}.",
        "",
        "| request | concurrency | images/s | p50 ms | p99 ms | server CPU ms/image "
        "| server cores | client cores | other cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, connections), results in runs.items():
        lines.append(
            f"| {name} | {connections} | {median([r.rps for r in results]):.0f} "
            f"| {median([r.p50_ms for r in results]):.1f} "
            f"| {median([r.p99_ms for r in results]):.1f} "
            f"| {median([r.server_cpu_ms for r in results]):.2f} "
            f"| {median([r.server_cores for r in results]):.2f} "
            f"| {median([r.client_cores for r in results]):.2f} "
            f"| {median([r.other_cores for r in results]):.2f} "
            f"| {_errors(results)} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run each request kind in turn against one gateway; print a markdown report."""
    if sys.argv[1:2] == ["grpc-client"]:
        grpc_client(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--other-cores", type=float, default=OTHER_CORES,
        help="retake a run when other work kept more than this many cores busy",
    )  # fmt: skip
    parser.add_argument("--retakes", type=int, default=RETAKES)
    options = parser.parse_args()
    concurrency = [int(c) for c in options.concurrency.split(",")]
    runs: dict[tuple[str, int], list[Run]] = defaultdict(list)
    retaken = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests = kinds(workdir)
        for kind in requests:  # the table's order, whatever the order of the runs
            for connections in concurrency:
                runs[(kind.name, connections)] = []
        for repeat in range(options.repeats):
            grpc_port = _free_port()
            address = f"127.0.0.1:{grpc_port}"
            target = Target("gateway defaults", "gateway", {**OBS_ON, "GRPC_PORT": str(grpc_port)})
            with server(target, workdir) as running:
                shift = repeat % len(requests)  # no kind always runs first
                for kind in requests[shift:] + requests[:shift]:
                    measure(running, address, kind, concurrency[0], 2)  # warm up
                    for connections in concurrency:
                        for attempt in range(options.retakes + 1):
                            result = measure(running, address, kind, connections, options.seconds)
                            if result.other_cores <= options.other_cores:
                                break
                            if attempt < options.retakes:
                                retaken += 1
                                print(
                                    f"{kind.name} c={connections}: other work kept "
                                    f"{result.other_cores:.2f} cores busy; retaking the run",
                                    file=sys.stderr,
                                    flush=True,
                                )
                        runs[(kind.name, connections)].append(result)
                        print(
                            f"repeat {repeat + 1} {kind.name} c={connections}: "
                            f"{result.rps:.1f}/s, {result.server_cpu_ms:.2f} ms CPU, "
                            f"client {result.client_cores:.2f} cores, "
                            f"other {result.other_cores:.2f} cores, "
                            f"errors {result.error_rate:.2%} {result.failures or ''}",
                            file=sys.stderr,
                            flush=True,
                        )
    print(report(runs, options, retaken))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / "protocols.json").write_text(
        json.dumps(
            [
                {"request": name, "concurrency": connections, "runs": [asdict(r) for r in rs]}
                for (name, connections), rs in runs.items()
            ],
            indent=2,
        )
    )
    if any(r.error_rate > 0 for results in runs.values() for r in results):
        print("some requests failed: see the errors column", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
