"""Per-request cost of the telemetry: metrics and tracing on vs off, in-process.

The gateway's own model would hide the overhead (a forward pass takes ~40 ms), so the
app serves a backend that returns fixed logits at once and a 64x64 JPEG: what remains is
HTTP handling in the app, preprocessing of a tiny image, and telemetry. Requests go
straight into the ASGI app (no sockets), configurations alternate run by run, and the
table reports medians of repeated runs and the ratio to the all-off baseline. A third
row measures what a refusal costs: ``/predict`` while the model is held and the queue
full, so each request is answered 503 by the real admission check (as under overload).

    .venv/bin/python -m bench.telemetry_overhead [--requests 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.http_bench import otlp_sink
from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import LoadedModel, ModelSpec
from inference_gateway.observability.metrics import Metrics


class InstantBackend:
    """Fixed logits, no compute: isolates everything around the model."""

    name = "instant"
    memory_bytes = 0

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = np.zeros((batch.shape[0], 1000), dtype=np.float32)
        logits[:, 3] = 4.0
        return logits

    def close(self) -> None:
        """Nothing to release."""


class HeldBackend(InstantBackend):
    """Blocks every forward pass until released: keeps the queue full for refusals."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.release.wait(60)
        return super().predict(batch)


def _loader() -> LoadedModel:
    return LoadedModel(ModelSpec("efficientnet-lite0", "1", imagenet_labels()), InstantBackend())


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


TRACED = "metrics + tracing (100% sampled, no export)"
CONFIGS: dict[str, dict[str, Any]] = {
    "all off": {"enable_metrics": False, "enable_tracing": False},
    "metrics on": {"enable_metrics": True, "enable_tracing": False},
    TRACED: {"enable_metrics": True, "enable_tracing": True},
}
#: The configuration whose spans go to a local OTLP sink: batched, encoded and posted
#: as in production (its endpoint is filled in when the sink runs).
EXPORTED = "metrics + tracing (100% sampled, OTLP export)"


async def _call(app: Callable[..., Any], method: str, path: str, body: bytes, ctype: str) -> int:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


#: Not a path: `/predict` while the queue is full, so every request is refused (503).
REFUSED = "/predict refused (queue full)"


async def _run(
    config: dict[str, Any], requests: int, path: str, body: bytes
) -> tuple[float, float]:
    """Wall-clock and CPU (all threads) microseconds per request.

    For `REFUSED`, the model is held on its first request and a second one fills a
    one-place queue; every measured request is then refused by the real admission
    check, as under overload.
    """
    refused = path == REFUSED
    held = HeldBackend()
    loader = (
        (lambda: LoadedModel(ModelSpec("efficientnet-lite0", "1", imagenet_labels()), held))
        if refused
        else _loader
    )
    extra: dict[str, Any] = (
        {"max_queue_size": 1, "max_batch_size": 1, "model_warmup": False} if refused else {}
    )
    # As one worker of `serve`'s default layout (one per core), whose threads are sized
    # to its share of the cores; WORKERS=0 in-process would mean a lone process.
    workers = Settings(_env_file=None).effective_workers
    settings = Settings(
        _env_file=None, log_level="WARNING", log_format="json", workers=workers,
        **config, **extra,
    )  # fmt: skip
    app = create_app(settings, model_loader=loader, configure_logging=False)
    async with app.router.lifespan_context(app):
        while not app.state.registry.resolve().ready:
            await asyncio.sleep(0.01)
        method = "GET" if path == "/health" else "POST"
        route, expected = ("/predict", 503) if refused else (path, 200)
        blockers: list[asyncio.Future[int]] = []
        if refused:
            # The first request must be inside the model (not merely queued) before the
            # second one takes the queue's one place.
            for is_held in (
                held.entered.is_set,
                lambda: app.state.registry.resolve().batcher.pending >= 2,
            ):
                blockers.append(
                    asyncio.ensure_future(_call(app, method, route, body, "image/jpeg"))
                )
                while not is_held():
                    if blockers[-1].done():
                        raise RuntimeError(f"a held request was answered {blockers[-1].result()}")
                    await asyncio.sleep(0.01)
        for _ in range(50):  # warm caches and lazily created series
            await _call(app, method, route, body, "image/jpeg")
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(requests):
            status = await _call(app, method, route, body, "image/jpeg")
            assert status == expected, status
        wall = (time.perf_counter() - started) / requests * 1e6
        cpu = (time.process_time() - cpu_started) / requests * 1e6
        held.release.set()
        await asyncio.gather(*blockers)
        return wall, cpu


#: Seconds one cell may take: a stuck cell fails the benchmark instead of hanging it.
CELL_TIMEOUT = 120.0


async def _bounded(run: Any, path: str, name: str) -> Any:
    """``run`` within `CELL_TIMEOUT`; on expiry, print every task's stack and fail."""
    try:
        async with asyncio.timeout(CELL_TIMEOUT):
            return await run
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise SystemExit(f"{path} / {name}: no result after {CELL_TIMEOUT:.0f} s") from None


def _metrics_per_predict_us(iterations: int) -> float:
    """Microseconds of the metric calls one answered /predict makes, in isolation."""
    metrics = Metrics(app_name="bench", app_version="1", environment="bench")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    model = ("efficientnet-lite0", "1")
    started = time.perf_counter()
    for _ in range(iterations):
        metrics.active_requests.inc()
        metrics.record_image(48_213, 640, 480, 0.003)
        metrics.set_queue_size(model, 1)
        metrics.set_queue_size(model, 0)
        metrics.record_queue_wait(model, 0.0002)
        metrics.record_inference(model, 0.03, 1, trace_id)
        metrics.record_prediction(model, "tabby", 0.61)
        metrics.record_request("POST", "/predict", 200, 0.035, trace_id)
        metrics.active_requests.dec()
    return (time.perf_counter() - started) / iterations * 1e6


def main() -> None:
    """Run the benchmark and print a markdown table (JSON with --json-out)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    from inference_gateway.observability.logging import setup_logging

    # As deployed, with request logs below the level. Refusals log at WARNING: each line
    # is formatted and written as deployed, but to /dev/null, off the table.
    setup_logging("WARNING", "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the run
    body = _jpeg()
    paths = ("/health", "/predict", REFUSED)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, otlp_sink(Path(tmp)) as sink:
        endpoint = {"otel_exporter_otlp_traces_endpoint": sink.url + "/v1/traces"}
        configs = {**CONFIGS, EXPORTED: {**CONFIGS[TRACED], **endpoint}}
        wall: dict[str, dict[str, list[float]]] = {p: {c: [] for c in configs} for p in paths}
        cpu: dict[str, dict[str, list[float]]] = {p: {c: [] for c in configs} for p in paths}
        for _ in range(args.repeats):
            for path in paths:
                for name, config in configs.items():
                    run = _run(config, args.requests, path, body)
                    w, c = asyncio.run(_bounded(run, path, name))
                    wall[path][name].append(w)
                    cpu[path][name].append(c)
    machine = platform.processor() or platform.machine()
    print(f"Machine: {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{args.requests} requests per run, {args.repeats} runs per cell, medians\n")
    print(
        "| endpoint | configuration | wall µs/request | vs all off | CPU µs/request | vs all off |"
    )
    print("|---|---|---:|---:|---:|---:|")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for path in paths:
        wall_base = statistics.median(wall[path]["all off"])
        cpu_base = statistics.median(cpu[path]["all off"])
        for name in configs:
            w = statistics.median(wall[path][name])
            c = statistics.median(cpu[path][name])
            summary.setdefault(path, {})[name] = {"wall_us": w, "cpu_us": c}
            print(
                f"| `{path}` | {name} | {w:.0f} | {w / wall_base:.2f}× "
                f"| {c:.0f} | {c / cpu_base:.2f}× |"
            )
    isolated = statistics.median(_metrics_per_predict_us(20_000) for _ in range(args.repeats))
    print(f"\nMetric calls of one answered /predict, in isolation: {isolated:.1f} µs (median)")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        raw = {"wall_us": wall, "cpu_us": cpu, "median": summary, "metrics_isolated_us": isolated}
        args.json_out.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
