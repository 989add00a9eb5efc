"""What the gateway's signals look like for a fixed set of requests, as comparable JSON.

    PYTHONPATH=. .venv/bin/python scripts/signal_snapshot.py > after.json

Serves the built-in model in process (TestClient) and sends: a prediction with a photo,
a prediction without an image (422), an unknown path (404), a malformed Open Inference
Protocol request (400), the probes and a scrape. Prints every metric series (name and
labels; the values of counters, and counts of histograms), every log line's fields (the
stable values; ids, times and durations as their types) and every span (name, kind,
parent, attribute names, status). Run it on two revisions and diff the outputs to see
what a change did to the signals (it was written for moving the observability into
libs/golden-signals).
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from inference_gateway.app import create_app
from inference_gateway.config import Settings
from inference_gateway.observability.logging import setup_logging
from tests.images import cat_jpeg

#: Log fields whose values differ from run to run: only their type is compared.
VOLATILE = {"timestamp", "trace_id", "span_id", "request_id", "pid", "duration_ms",
            "inference_ms", "confidence", "trace_flags", "trace_sampled", "exception",
            "load_seconds"}  # fmt: skip
#: Metric families that describe the process, not the requests.
PROCESS = ("process_", "python_")


def main() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    spans = InMemorySpanExporter()
    settings = Settings(
        _env_file=None, environment="production", log_format="json",  # type: ignore[call-arg]
        otel_exporter_otlp_endpoint=None, otel_exporter_otlp_traces_endpoint=None,
        prometheus_multiproc_dir=None, trace_sample_ratio=1.0,
    )  # fmt: skip
    app = create_app(settings, span_exporter=spans, configure_logging=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:  # the model loads in the background
            if time.monotonic() > deadline:
                raise SystemExit("the model did not load")
            time.sleep(0.2)
        headers = {"x-request-id": "snapshot"}
        image = {"file": ("cat.jpg", cat_jpeg(), "image/jpeg")}
        if client.post("/predict", files=image, headers=headers).status_code != 200:
            raise SystemExit("the prediction failed")
        client.post("/predict", headers=headers)
        client.get("/no/such/path", headers=headers)
        client.post("/v2/models/efficientnet-lite0/infer", content=b"{not json", headers=headers)
        client.get("/health")
        scrape = client.get("/metrics").text
    app.state.telemetry.tracer_provider.force_flush()
    print(json.dumps({"metrics": _metrics(scrape), "logs": _logs(stream), "spans": _spans(spans)},
                     indent=1, sort_keys=True))  # fmt: skip


def _metrics(scrape: str) -> list[str]:
    found = []
    for family in text_string_to_metric_families(scrape):
        if family.name.startswith(PROCESS):
            continue
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            shown = (
                f" = {sample.value:g}"
                if family.type in ("counter", "gauge") or sample.name.endswith("_count")
                else ""
            )
            if sample.name.endswith(("_created", "_gsum")) or family.name == "app_info":
                shown = ""
            found.append(f"{sample.name}{{{labels}}}{shown}")
    return sorted(found)


def _logs(stream: io.StringIO) -> list[dict[str, Any]]:
    found = []
    for line in stream.getvalue().splitlines():
        record = json.loads(line)
        if record.get("logger") == "httpx2":
            continue
        found.append(
            {k: (type(v).__name__ if k in VOLATILE else v) for k, v in sorted(record.items())}
        )
    return found


def _spans(exporter: InMemorySpanExporter) -> list[str]:
    names = {span.context.span_id: span.name for span in exporter.get_finished_spans()}
    return sorted(
        f"{span.name} kind={span.kind.name} parent={names.get(span.parent.span_id) if span.parent else None} "
        f"attributes={sorted(span.attributes or {})} status={span.status.status_code.name} "
        f"scope={span.instrumentation_scope.name if span.instrumentation_scope else None}"
        for span in exporter.get_finished_spans()
    )


if __name__ == "__main__":
    sys.exit(main())
