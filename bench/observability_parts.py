"""Where observability's CPU goes, part by part, for one answered `/predict`.

    .venv/bin/python -m bench.observability_parts [--repeats 5]

Each part is timed alone in a loop (CPU time, median of ``--repeats``): the FastAPI
server span (`instrument_fastapi`), starting and ending a span the SDK's way and the
gateway's way (`TracedOperation`), a span that is never made current, handing a
finished span to the batch span processor, encoding the spans of a real request for
OTLP, a request's log calls, and a request's metric calls. The spans are those
the app really makes: requests go through the in-process app with an instant model
and an in-memory exporter, and are then counted and encoded. The table multiplies
each part by how often a request pays it, so the parts can be set against a whole
image (about 12 ms of CPU for the ceiling on the reference VM).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.common import photo_jpeg
from bench.http_bench import BOUNDARY, multipart_body
from bench.telemetry_overhead import _call, _loader, _metrics_per_predict_us
from golden_signals.logs import LogContext, get_logger, log_request_start
from golden_signals.sampling import TailSampling
from golden_signals.tracing import TracedOperation
from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.observability.logging import log_inference_complete, setup_logging

#: The spans the gateway starts with `TracedOperation`, and those it records afterwards.
TRACED_SPANS = frozenset(
    {"validate_input", "preprocess_image", "model_inference", "format_response", "inference_batch"}
)
PLAIN_SPANS = frozenset({"queue_wait", "forward_pass"})


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def _cpu_us(step: Callable[[], object], iterations: int) -> float:
    """CPU microseconds per call of ``step`` (after a warm-up)."""
    for _ in range(iterations // 10):
        step()
    started = time.process_time()
    for _ in range(iterations):
        step()
    return (time.process_time() - started) / iterations * 1e6


def _request_spans(requests: int = 100) -> list[ReadableSpan]:
    """The spans ``requests`` answered uploads of the bench photo make in the app."""
    memory = InMemorySpanExporter()
    # Every trace kept: the parts of a request whose trace is exported.
    settings = Settings(_env_file=None, log_level="WARNING", workers=2, trace_sample_ratio=1.0)
    app = create_app(
        settings,
        model_loader=_loader,
        span_processors=(SimpleSpanProcessor(memory),),
        configure_logging=False,
    )
    body = multipart_body(photo_jpeg())
    content_type = f"multipart/form-data; boundary={BOUNDARY}"

    async def drive() -> None:
        async with app.router.lifespan_context(app):
            while not app.state.registry.resolve().ready:
                await asyncio.sleep(0.01)
            for _ in range(requests):
                status = await _call(app, "POST", "/predict", body, content_type)
                assert status == 200, status

    asyncio.run(drive())
    return list(memory.get_finished_spans())


def _instrumentation_us(iterations: int) -> float:
    """CPU microseconds the server span (`instrument_fastapi`) adds to one request of a
    bare app."""
    from fastapi import FastAPI

    from golden_signals.tracing import instrument_fastapi

    def bare_app() -> FastAPI:
        app = FastAPI()

        @app.post("/predict")
        async def predict() -> dict[str, str]:
            return {"status": "ok"}

        return app

    plain, traced = bare_app(), bare_app()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    instrument_fastapi(traced, provider.get_tracer("bench"))

    async def run(app: FastAPI) -> float:
        for _ in range(iterations // 10):
            await _call(app, "POST", "/predict", b"", "application/json")
        started = time.process_time()
        for _ in range(iterations):
            await _call(app, "POST", "/predict", b"", "application/json")
        return (time.process_time() - started) / iterations * 1e6

    cost = asyncio.run(run(traced)) - asyncio.run(run(plain))
    provider.shutdown()
    return cost


def _recorded_span_us(attributes: dict[str, int], iterations: int) -> float:
    """CPU microseconds of a tail-sampling record made current, under a request's
    server span (never decided here: what a dropped request pays)."""
    recorder = TailSampling([], ratio=0.0, slow_seconds=60.0)
    server = recorder.tracer.start_span("server")
    under_server = trace.set_span_in_context(server)

    def recorded() -> None:
        token = otel_context.attach(under_server)
        with TracedOperation("x", attributes, tracer=recorder.tracer):
            pass
        otel_context.detach(token)
        server.finished.clear()

    return _cpu_us(recorded, iterations)


def measure(repeats: int) -> list[tuple[str, float, float]]:
    """(part, µs each, times per request), medians of ``repeats``."""
    bare = TracerProvider().get_tracer("bench")
    batched_provider = TracerProvider()
    batched_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    batched = batched_provider.get_tracer("bench")
    attributes = {"image.bytes": 68_052}

    def sdk_span() -> None:
        with bare.start_as_current_span("x", attributes=attributes):
            pass

    def ours() -> None:
        with TracedOperation("x", attributes, tracer=bare):
            pass

    def ours_batched() -> None:
        with TracedOperation("x", attributes, tracer=batched):
            pass

    def plain() -> None:
        bare.start_span("x", attributes=attributes).end()

    sink = io.StringIO()
    setup_logging("WARNING", "json", stream=sink)  # the app's start-up lines stay out
    requests = 100
    spans = _request_spans(requests)
    per_request = len(spans) / requests
    # Made current with `TracedOperation` (the batch span: one per batch, here per
    # request as requests arrive one at a time); started and ended after the fact.
    traced = sum(s.name in TRACED_SPANS for s in spans) / requests
    after_the_fact = sum(s.name in PLAIN_SPANS for s in spans) / requests
    setup_logging("INFO", "json", stream=sink)  # a request's line as deployed at INFO
    logger = get_logger()

    def log_lines() -> None:
        with LogContext(request_id="5d1c2a8e-9c6f-4f2e-9d3b-1c2d3e4f5a6b", method="POST"):
            log_request_start(logger, "POST", "/predict")
            log_inference_complete(
                logger, "efficientnet-lite0", "tabby", 0.61, 14.2, method="POST",
                endpoint="/predict", status_code=200, inference_ms=9.1, batch_size=3,
            )  # fmt: skip
        sink.seek(0)
        sink.truncate()

    def encode() -> None:
        encode_spans(spans).SerializeToString()

    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        samples.setdefault("sdk", []).append(_cpu_us(sdk_span, 20_000))
        samples.setdefault("ours", []).append(_cpu_us(ours, 20_000))
        samples.setdefault("bsp", []).append(_cpu_us(ours_batched, 20_000))
        samples.setdefault("plain", []).append(_cpu_us(plain, 20_000))
        samples.setdefault("recorded", []).append(_recorded_span_us(attributes, 20_000))
        samples.setdefault("encode", []).append(_cpu_us(encode, 20) / len(spans))
        samples.setdefault("logs", []).append(_cpu_us(log_lines, 5_000))
        samples.setdefault("metrics", []).append(_metrics_per_predict_us(5_000))
        samples.setdefault("server", []).append(_instrumentation_us(3_000))
    batched_provider.shutdown()
    m = {k: statistics.median(v) for k, v in samples.items()}
    return [
        ("server span: `instrument_fastapi`'s middleware and span", m["server"], 1),
        ("span start + end, `TracedOperation` (made current)", m["ours"], traced),
        ("(the same with the SDK's `start_as_current_span`)", m["sdk"], traced),
        ("span start + end, never current (`queue_wait`, `forward_pass`)", m["plain"],
         after_the_fact),
        ("(a tail-sampling record instead of a span, made current; kept ones become spans)",
         m["recorded"], traced),
        # The server span's hand-off is inside its own row.
        ("handing an ended span to the batch span processor", m["bsp"] - m["ours"],
         per_request - 1),
        ("encoding a span for OTLP (protobuf)", m["encode"], per_request),
        ("the request's log calls (one JSON line at INFO)", m["logs"], 1),
        ("the request's metric calls", m["metrics"], 1),
    ]  # fmt: skip


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = measure(args.repeats)
    print(f"CPU per part, medians of {args.repeats} runs; spans per request as the app made them\n")
    print("| part | µs each | per request | µs per request |")
    print("|---|---:|---:|---:|")
    for part, each, times in rows:
        print(f"| {part} | {each:.1f} | {times:.2f} | {each * times:.0f} |")
    tracing = sum(e * t for part, e, t in rows if "span" in part and not part.startswith("("))
    records = sum(e * t for part, e, t in rows if "tail-sampling record" in part)
    rest = sum(e * t for part, e, t in rows if "span" not in part)
    print(
        f"\nTracing's parts with every span made and exported (head sampling, "
        f"`always_on`): {tracing:.0f} µs per request. Under tail sampling a dropped "
        f"request makes records instead of its five current spans ({records:.0f} µs) and "
        "nothing is handed on or encoded. Log and metric calls: "
        f"{rest:.0f} µs."
    )


if __name__ == "__main__":
    main()
