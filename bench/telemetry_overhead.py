"""Per-request cost of the telemetry: metrics and tracing on vs off, in-process.

The gateway's own model would hide the overhead (a forward pass takes ~40 ms), so the
app serves a backend that returns fixed logits at once and a 64x64 JPEG: what remains is
HTTP handling in the app, preprocessing of a tiny image, and telemetry. Requests go
straight into the ASGI app (no sockets), configurations alternate run by run, and the
table reports medians of repeated runs and the ratio to the all-off baseline.

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import LoadedModel, ModelSpec


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


def _loader() -> LoadedModel:
    return LoadedModel(ModelSpec("efficientnet-lite0", "1", imagenet_labels()), InstantBackend())


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


CONFIGS: dict[str, dict[str, Any]] = {
    "all off": {"enable_metrics": False, "enable_tracing": False},
    "metrics on": {"enable_metrics": True, "enable_tracing": False},
    "metrics + tracing (100% sampled, no export)": {"enable_metrics": True, "enable_tracing": True},
}


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


async def _run(config: dict[str, Any], requests: int, path: str, body: bytes) -> float:
    settings = Settings(_env_file=None, log_level="WARNING", log_format="json", **config)  # type: ignore[call-arg]
    app = create_app(settings, model_loader=_loader, configure_logging=False)
    async with app.router.lifespan_context(app):
        while not app.state.host.ready:
            await asyncio.sleep(0.01)
        method = "POST" if path == "/predict" else "GET"
        for _ in range(50):  # warm caches and lazily created series
            await _call(app, method, path, body, "image/jpeg")
        started = time.perf_counter()
        for _ in range(requests):
            status = await _call(app, method, path, body, "image/jpeg")
            assert status == 200, status
        return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    """Run the benchmark and print a markdown table (JSON with --json-out)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    from inference_gateway.observability.logging import setup_logging

    setup_logging("WARNING", "json")  # as deployed, with request logs below the level
    body = _jpeg()
    results: dict[str, dict[str, list[float]]] = {
        p: {c: [] for c in CONFIGS} for p in ("/health", "/predict")
    }
    for _ in range(args.repeats):
        for path in results:
            for name, config in CONFIGS.items():
                results[path][name].append(asyncio.run(_run(config, args.requests, path, body)))
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"{args.requests} requests per run, {args.repeats} runs per cell, medians\n")
    print("| endpoint | configuration | µs / request (median) | vs all off |")
    print("|---|---|---:|---:|")
    summary: dict[str, dict[str, float]] = {}
    for path, by_config in results.items():
        base = statistics.median(by_config["all off"])
        for name, runs in by_config.items():
            median = statistics.median(runs)
            summary.setdefault(path, {})[name] = median
            print(
                f"| `{path}` | {name} | {median:.1f} | {median / base:.2f}× (+{median - base:.1f} µs) |"
            )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"raw_us": results, "median_us": summary}, indent=2))


if __name__ == "__main__":
    main()
