"""CPU per request of the observability library against what people use instead.

    .venv/bin/python -m bench.library_overhead [--requests 3000] [--repeats 10]

One small FastAPI app (``GET /items/{item_id}`` answering a small JSON object), driven
in process through its ASGI interface (no sockets, so only the app and its
instrumentation spend CPU), once bare and once with each of:

- golden-signals' ``instrument(app)``: metrics, JSON access logs (written to
  /dev/null) and traces (server span, tail sampling at its default 5 %, kept spans to a
  batch processor and an exporter that drops them), all three signals;
- the same with several workers' bookkeeping (``PROMETHEUS_MULTIPROC_DIR`` set: the
  values are published for the other workers);
- prometheus-fastapi-instrumentator's ``Instrumentator().instrument(app)``: metrics only;
- OpenTelemetry's ``FastAPIInstrumentor.instrument_app``: traces only (and OTel
  metrics to the no-op meter provider), every span to a batch processor and the
  dropping exporter.

Each app's lifespan is started first on the bench's loop, as a server starts it before
its first request (the library writes access lines together only on a loop that serves
an app). The variants take turns within each repeat (so the machine's drift reaches all
alike), each first in turn (the first of a fixed order read higher in every run); each
figure is the median over the repeats of CPU time (``time.process_time``) per request,
and the overhead is that minus the bare app's from the same repeats; the ratio of ours
to the instrumentator's overhead, per repeat, has a 90% bootstrap interval. The
process's CPU time counts every thread, so a turn ends with its spans exported (the
batch processor flushed) before the clock is read. The several-workers variant's
publishing thread runs throughout, as in a server: it sleeps until a scrape asks or its
next flush (once a second) is due. (It used to wake every 50 ms to look for a scrape's
request; while the app thread held the interpreter's lock between short system calls,
the waking thread could not take it and woke again and again: about 20 µs a request
more, billed to whichever variant was running.)
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from bench.common import machine, rotated
from bench.paired import overhead_ratio
from golden_signals import instrument


class _Dropping(SpanExporter):
    """An exporter that takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, "name": "widget"}

    return app


@dataclass(frozen=True)
class Variant:
    """An instrumented app, and how to finish its background work at the end of a turn
    (``flush``: the spans its batch processor still holds), so that work is counted in
    its own turn."""

    app: Any
    flush: Callable[[], object] = lambda: None


def bare() -> Variant:
    return Variant(_app())


def golden_signals() -> Variant:
    app = _app()
    null = open(os.devnull, "w")  # noqa: SIM115 - the app's stdout for the whole run
    instrumentation = instrument(app, log_stream=null, include_registry=None, exporter=_Dropping())
    return Variant(app, _flush_spans(instrumentation.tracer_provider))


def golden_signals_workers() -> Variant:
    app = _app()
    null = open(os.devnull, "w")  # noqa: SIM115 - the app's stdout for the whole run
    directory = tempfile.mkdtemp(prefix="golden-signals-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # the workers' files
    instrumentation = instrument(
        app, log_stream=null, include_registry=None, exporter=_Dropping(),
        multiprocess_dir=directory,
    )  # fmt: skip
    instrumentation.start()  # its publishing thread, as at a server's start-up
    return Variant(app, _flush_spans(instrumentation.tracer_provider))


def instrumentator() -> Variant:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = _app()
    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return Variant(app)


def opentelemetry_fastapi() -> Variant:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = _app()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropping()))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return Variant(app, provider.force_flush)


def _flush_spans(provider: TracerProvider | None) -> Callable[[], object]:
    assert provider is not None, "tracing is on in these variants"
    return provider.force_flush


OURS, INSTRUMENTATOR = "golden-signals `instrument(app)`", "prometheus-fastapi-instrumentator"
VARIANTS: dict[str, tuple[Callable[[], Variant], str]] = {
    "bare": (bare, "none"),
    OURS: (golden_signals, "metrics, logs, traces"),
    "golden-signals, several workers": (golden_signals_workers, "metrics, logs, traces"),
    INSTRUMENTATOR: (instrumentator, "metrics"),
    "OpenTelemetry FastAPIInstrumentor": (opentelemetry_fastapi, "traces"),
}


async def started(app: Any) -> asyncio.Task[None]:
    """Run ``app``'s ASGI lifespan on the running loop up to its start-up's end, as a
    server does before its first request (the instrumentation then knows the loop
    serves it: its access lines are written together), and leave it running; the task
    that runs it."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    messages.put_nowait({"type": "lifespan.startup"})
    up = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup") and not up.done():
            up.set_result(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task: asyncio.Task[None] = asyncio.ensure_future(app(scope, messages.get, send))
    outcome = await up
    assert outcome == "lifespan.startup.complete", outcome
    return task


async def _drive(variant: Variant, requests: int) -> float:
    """CPU seconds per request over ``requests`` sequential GETs through the variant's
    app, its background work finished (`Variant.flush`) before the clock is read: the
    process's CPU time counts every thread."""
    app = variant.app

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.process_time()
    for index in range(requests):
        path = f"/items/{index}"
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 40000), "server": ("bench", 80), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)
        await asyncio.sleep(0)  # each request in a loop iteration of its own, as a server's
    variant.flush()
    spent = time.process_time() - start
    assert statuses == [200] * requests, statuses[:5]
    return spent / requests


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=10)  # each variant first twice
    args = parser.parse_args(argv)
    variants = {name: build() for name, (build, _) in VARIANTS.items()}
    loop = asyncio.new_event_loop()
    lifespans = [loop.run_until_complete(started(variant.app)) for variant in variants.values()]
    for variant in variants.values():  # warm-up: routes compiled, first-call paths taken
        loop.run_until_complete(_drive(variant, 200))
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in rotated(list(variants), repeat):  # each first in turn: no place favoured
            runs[name].append(loop.run_until_complete(_drive(variants[name], args.requests)) * 1e6)
    for lifespan in lifespans:
        lifespan.cancel()
    loop.close()
    base = runs["bare"]
    print(f"# The observability library's CPU per request ({machine()})\n")
    print(f"`python -m bench.library_overhead --requests {args.requests} --repeats {args.repeats}`;"
          " in-process ASGI, one small FastAPI route, medians of the repeats.\n")  # fmt: skip
    print("| instrumentation | signals | CPU µs/request | overhead µs/request | × bare |")
    print("|---|---|---:|---:|---:|")
    for name, values in runs.items():
        extra = statistics.median(v - b for v, b in zip(values, base, strict=True))
        print(
            f"| {name} | {VARIANTS[name][1]} | {statistics.median(values):.1f} | "
            f"{extra:.1f} | {statistics.median(values) / statistics.median(base):.2f} |"
        )
    ratio = overhead_ratio(runs[OURS], runs[INSTRUMENTATOR], base, "repeat")
    if ratio is not None:
        print(f"\n{ratio}")


if __name__ == "__main__":
    main()
