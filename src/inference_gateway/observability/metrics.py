"""Prometheus metrics: the four golden signals and where each request's time goes.

The names here are a contract with the dashboards and alert rules under ``deploy/``;
change them together. Every metric lives in a registry owned by one app (never the
global default), and every label value is bounded: route templates, fixed reasons,
the model's own class labels.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from golden_signals.metrics import Family, HistogramFamily, HttpMetrics, SignalRegistry
from golden_signals.routes import endpoint_of

#: Request latency buckets (seconds): an edge at the 0.3 s objective, dense around it.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3,
    0.35, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Stage buckets (preprocess, queue wait, forward pass): milliseconds matter here.
STAGE_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
)  # fmt: skip
#: `model_quality_reference_fraction` of a bucket that only a replaced reference had,
#: with several workers (its series cannot be removed); the rules leave such out.
RETIRED_BUCKET = -1.0
CONFIDENCE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
IMAGE_BYTES_BUCKETS: tuple[float, ...] = tuple(float(2**p) for p in range(10, 25))  # 1 KiB..16 MiB
IMAGE_SIDE_BUCKETS: tuple[float, ...] = (
    32, 64, 128, 224, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384,
)  # fmt: skip
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

#: The labels that name a model in every per-model metric.
MODEL_LABELS: tuple[str, ...] = ("model_name", "model_version")

#: A model's label values: (name, version).
ModelKey = tuple[str, str]

#: Model load durations (seconds): an ONNX session opens in well under a second, an
#: export from torch takes tens of seconds.
LOAD_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Bounded reasons for refusals (``requests_rejected_total``).
REJECT_REASONS: tuple[str, ...] = (
    "connection_limit",
    "queue_full",
    "deadline_unreachable",
    "deadline_exceeded",
    "inflight_bytes",
    "payload_too_large",
    "not_ready",
    "draining",
    "model_stalled",
    "model_failed",
)


#: The route templates that classify an image; their series exist from start-up.
PREDICT_ENDPOINTS: tuple[str, ...] = (
    "/predict",
    "/models/{name}/predict",
    "/models/{name}/versions/{version}/predict",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
)

#: Status codes of the gRPC service's ``ModelInfer`` whose series exist from start-up
#: when it runs (`initialise_grpc`).
GRPC_INFER_CODES: tuple[str, ...] = (
    "OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED", "INTERNAL",
)  # fmt: skip

#: Statuses of the prediction routes whose series exist from start-up (`initialise_series`).
PREDICT_STATUSES: tuple[str, ...] = (
    "200", "400", "404", "408", "413", "415", "422", "499", "500", "503", "504",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """A model version's counters since start-up (`Metrics.model_totals`)."""

    predictions: float = 0.0  # images answered
    failures: float = 0.0  # images whose forward pass failed
    batches: float = 0.0  # forward passes
    batch_images: float = 0.0  # images in those forward passes
    inference_seconds: float = 0.0  # the forward passes' time
    queue_waits: float = 0.0  # images that waited for their forward pass
    queue_seconds: float = 0.0  # their waiting time


#: The samples `ModelTotals` reads, each with its field.
_TOTALS_SAMPLES: dict[str, str] = {
    "prediction_confidence_count": "predictions",
    "model_inference_errors_total": "failures",
    "inference_batch_size_count": "batches",
    "inference_batch_size_sum": "batch_images",
    "model_inference_duration_seconds_sum": "inference_seconds",
    "inference_queue_wait_seconds_count": "queue_waits",
    "inference_queue_wait_seconds_sum": "queue_seconds",
}
_TOTALS_FAMILIES = frozenset(
    {
        "prediction_confidence",
        "model_inference_errors",
        "inference_batch_size",
        "model_inference_duration_seconds",
        "inference_queue_wait_seconds",
    }
)


def _normalize_endpoint(scope: MutableMapping[str, Any]) -> str:
    """The route template a request matched (``/items/{id}``), never its raw path: the
    specification's helper, the library's `golden_signals.routes.endpoint_of` (what the
    middleware labels requests with). Requests that matched nothing share the single
    value `golden_signals.routes.UNMATCHED_ENDPOINT`."""
    return endpoint_of(scope)


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Create an empty directory for prometheus_client's multiprocess mode.

    Must run in the parent before any worker starts: stale files from an earlier run
    would be summed into the new one's counters.
    """
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


class RequestFamilies:
    """The families a request's path writes: HTTP and gRPC calls, the model's work,
    its answers and their quality signals, the images. They are the observability
    library's (`golden_signals.metrics.SignalRegistry`): numbers in this process,
    published per worker and summed at every scrape, exemplars from every worker, no
    prometheus_client multiprocess write (an mmap write under a process-wide lock per
    value) on the path. The rarer events and the gauges that need prometheus_client's
    other multiprocess modes stay on prometheus_client (`Metrics`).

    The event loop writes the HTTP, gRPC, answer, image and quality families, alone.
    The batcher threads (one per version, two for a version replaced in place while the
    old one drains) write the forward passes, queue waits and failed passes under
    ``batcher_lock``: an increment reads and then writes, and two threads must not
    interleave on one series. The queue gauge is set from both, and a set replaces the
    value.
    """

    def __init__(self, directory: str | None) -> None:
        """The families, published to ``directory`` with several workers (also what a
        process that serves none, the parent on ``METRICS_PORT``, reads the workers'
        publications with)."""
        registry = SignalRegistry(directory, name="requests", include=None)
        self.registry = registry
        self.batcher_lock = threading.Lock()
        # Traffic, errors, latency and requests in flight.
        self.http = HttpMetrics(registry, LATENCY_BUCKETS, first_byte=False)
        self.grpc_requests = registry.counter(
            "grpc_requests_total", "gRPC calls by method and status code.",
            ("grpc_method", "code"),
        )  # fmt: skip
        self.grpc_duration = registry.histogram(
            "grpc_request_duration_seconds", "gRPC call latency (seconds).",
            ("grpc_method",), LATENCY_BUCKETS,
        )  # fmt: skip
        # The model's work.
        self.queue_size = registry.gauge(
            "inference_queue_size", "Requests waiting for the forward pass.", MODEL_LABELS
        )
        self.inference_duration = registry.histogram(
            "model_inference_duration_seconds", "Forward-pass latency per batch (seconds).",
            MODEL_LABELS, STAGE_BUCKETS,
        )  # fmt: skip
        self.queue_wait = registry.histogram(
            "inference_queue_wait_seconds", "Time a request waited for its forward pass.",
            MODEL_LABELS, STAGE_BUCKETS,
        )  # fmt: skip
        self.batch_size = registry.histogram(
            "inference_batch_size", "Images per forward pass.", MODEL_LABELS, BATCH_SIZE_BUCKETS
        )
        self.predictions = registry.counter(
            "model_predictions_total", "Top-1 predictions by class.", (*MODEL_LABELS, "class")
        )
        self.inference_errors = registry.counter(
            "model_inference_errors_total", "Failed forward passes, per request.",
            (*MODEL_LABELS, "error_type"),
        )  # fmt: skip
        self.confidence = registry.histogram(
            "prediction_confidence", "Softmax confidence of the top-1 class.",
            MODEL_LABELS, CONFIDENCE_BUCKETS,
        )  # fmt: skip
        self.quality_observations = registry.counter(
            "model_quality_observations_total",
            "Answered images by signal and by the bucket of the version's reference they fall in.",
            (*MODEL_LABELS, "signal", "bucket"),
        )  # fmt: skip
        # Images: one series each, there from the start.
        self.image_bytes = registry.histogram(
            "image_size_bytes", "Size of uploaded images (bytes).", (), IMAGE_BYTES_BUCKETS
        )
        self.image_width = registry.histogram(
            "image_width_pixels", "Width of decoded images (pixels).", (), IMAGE_SIDE_BUCKETS
        )
        self.image_height = registry.histogram(
            "image_height_pixels", "Height of decoded images (pixels).", (), IMAGE_SIDE_BUCKETS
        )
        self.preprocess = registry.histogram(
            "image_preprocess_duration_seconds", "Decode and preprocess time (seconds).",
            (), STAGE_BUCKETS,
        )  # fmt: skip
        for image in (self.image_bytes, self.image_width, self.image_height, self.preprocess):
            image.touch()
        #: The families labelled by model version (`Metrics.forget_model`).
        self.per_model: tuple[Family, ...] = (
            self.queue_size, self.inference_duration, self.queue_wait, self.batch_size,
            self.predictions, self.inference_errors, self.confidence, self.quality_observations,
        )  # fmt: skip


class Metrics:
    """Every metric of one app, with the spec's helper methods.

    The families a request's path writes are the observability library's
    (`RequestFamilies`), the others prometheus_client's, in ``registry``. In
    multiprocess mode (several workers) prometheus_client's values are written to files
    in ``multiprocess_dir`` and `render` sums all workers' with the library's; the
    ``process_*`` series then come for every live worker with a ``pid`` label
    (`WorkerProcessCollector`), the series of model versions no live worker knows are
    left out (`ServedModelsOnly`), and the GC and platform collectors are unavailable.
    """

    def __init__(
        self,
        *,
        app_name: str,
        app_version: str,
        environment: str,
        registry: CollectorRegistry | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        """Create the metrics in ``registry`` (a new one by default)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        if multiprocess_dir is None:
            ProcessCollector(registry=r)
            GCCollector(registry=r)
            PlatformCollector(registry=r)
        self.families = RequestFamilies(multiprocess_dir)
        self.http = self.families.http
        self.active_requests = self.http.active_requests
        if multiprocess_dir is None:
            r.register(self.families.registry)
        self.http_protocol_errors_total = Counter(
            "http_protocol_errors_total",
            "Requests cut off below the router (malformed, TLS on the plain port, "
            "headers or body too slow or too large), by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.requests_rejected_total = Counter(
            "requests_rejected_total", "Requests the service refused to protect itself.",
            ["reason"], registry=r,
        )  # fmt: skip
        # Saturation.
        self.http_connections_open = Gauge(
            "http_connections_open", "Open HTTP connections of each worker (MAX_CONNECTIONS each).",
            registry=r, multiprocess_mode="liveall",
        )  # fmt: skip
        self.model_memory_usage_bytes = Gauge(
            "model_memory_usage_bytes",
            "Size of the loaded model: its files (ONNX Runtime) or parameters and buffers (torch).",
            MODEL_LABELS, registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.model_loaded = Gauge(
            "model_loaded", "1 when the model is loaded and warmed up, else 0.",
            MODEL_LABELS, registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self.app_info = Gauge(
            "app_info", "Application metadata; the value is always 1.",
            ["name", "version", "environment"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.app_info.labels(app_name, app_version, environment).set(1)
        # prometheus_client's metrics labelled by model version (`forget_model`).
        self._per_model: list[MetricWrapperBase] = []
        # The versions this process knows (`initialise_model` .. `forget_model`); in
        # multiprocess mode published for every scrape to filter by (`ServedModelsOnly`).
        self._known: set[ModelKey] = set()
        # The model's life.
        self.batcher_crashes_total = Counter(
            "batcher_crashes_total",
            "Unexpected failures of the batcher's worker loop (each restarts it).",
            MODEL_LABELS, registry=r,
        )  # fmt: skip
        self.model_load_failures_total = Counter(
            "model_load_failures_total", "Failed attempts to load a model version.",
            MODEL_LABELS, registry=r,
        )  # fmt: skip
        self.api_keys_reload_failures_total = Counter(
            "api_keys_reload_failures_total",
            "Changes of API_KEYS_FILE that could not be read (the keys last read stay).",
            registry=r,
        )  # fmt: skip
        self.model_loads_total = Counter(
            "model_loads_total", "Model versions loaded and put into service.",
            MODEL_LABELS, registry=r,
        )  # fmt: skip
        self.model_unloads_total = Counter(
            "model_unloads_total", "Model versions taken out of service and released.",
            MODEL_LABELS, registry=r,
        )  # fmt: skip
        self.model_load_duration_seconds = Histogram(
            "model_load_duration_seconds", "Time to load and warm up a model version (seconds).",
            MODEL_LABELS, buckets=LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self._init_quality(r)
        # Images that could not be used.
        self.image_decode_failures_total = Counter(
            "image_decode_failures_total", "Uploads that could not be decoded, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        # The telemetry pipeline itself: spans that reached the collector or were lost.
        self.tracing_spans_exported_total = Counter(
            "tracing_spans_exported_total", "Spans the collector accepted.", registry=r,
        )  # fmt: skip
        self.traces_kept_total = Counter(
            "traces_kept_total",
            "Requests whose trace tail sampling kept, by why (error, refused, timeout, "
            "slow, parent_sampled, ratio).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.tracing_spans_dropped_total = Counter(
            "tracing_spans_dropped_total",
            "Spans lost before the collector accepted them, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self._per_model = [
            self.model_memory_usage_bytes, self.model_loaded, self.batcher_crashes_total,
            self.model_load_failures_total, self.model_loads_total, self.model_unloads_total,
            self.model_load_duration_seconds, *self._quality_metrics,
        ]  # fmt: skip

    def _init_quality(self, r: CollectorRegistry) -> None:
        """Model quality without labels: each answer's signals bucketed by the version's
        reference (inference/quality.py; the observations are `RequestFamilies`'), and
        the reference's own shares."""
        self.model_quality_reference_fraction = Gauge(
            "model_quality_reference_fraction",
            "The reference's share of each bucket of each signal.",
            [*MODEL_LABELS, "signal", "bucket"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.model_quality_reference_info = Gauge(
            "model_quality_reference_info",
            "1 for a version whose quality signals are on, labelled with its reference's SHA-256.",
            [*MODEL_LABELS, "reference_sha256"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.model_quality_reference_images = Gauge(
            "model_quality_reference_images", "Images the version's reference was built from.",
            MODEL_LABELS, registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.model_quality_reference_confidence = Gauge(
            "model_quality_reference_confidence",
            "The reference's top-1 confidence: its mean and standard deviation (statistic).",
            [*MODEL_LABELS, "statistic"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self._quality_metrics: tuple[MetricWrapperBase, ...] = (
            self.model_quality_reference_fraction, self.model_quality_reference_info,
            self.model_quality_reference_images, self.model_quality_reference_confidence,
        )  # fmt: skip
        # The (model, signal, bucket) series of each version's reference: the buckets
        # `record_quality` counts into.
        self._quality_buckets: set[tuple[str, str, str, str]] = set()
        self._quality_sha: dict[ModelKey, str] = {}

    # --- the spec's helpers -------------------------------------------------------
    def record_request(
        self,
        method: str,
        endpoint: str,
        status: int,
        duration_seconds: float | None,
        trace_id: str | None = None,
        first_byte_seconds: float | None = None,
    ) -> None:
        """Count one finished HTTP request and observe its latency (the library's
        `golden_signals.metrics.RequestRecorder`; ``first_byte_seconds`` is not kept: the
        gateway's answers are single JSON bodies, their first byte is their last; a
        WebSocket session, ``duration_seconds`` None, is counted only)."""
        self.http.record_request(method, endpoint, status, duration_seconds, trace_id)

    def record_grpc_request(
        self, method: str, code: str, duration_seconds: float, trace_id: str | None = None
    ) -> None:
        """Count one finished gRPC call (``method``: the RPC's name, ``code``: its status
        code's name) and observe its latency."""
        families = self.families
        families.grpc_requests.inc((method, code))
        families.grpc_duration.observe((method,), duration_seconds, trace_id or None)

    def record_inference(
        self,
        model: ModelKey,
        duration_seconds: float,
        batch_size: int = 1,
        trace_id: str | None = None,
    ) -> None:
        """Observe one forward pass: its latency and how many images it carried."""
        families = self.families
        with families.batcher_lock:
            families.inference_duration.observe(model, duration_seconds, trace_id or None)
            families.batch_size.observe(model, batch_size)

    def record_prediction(
        self, model: ModelKey, class_label: str, confidence: float, trace_id: str | None = None
    ) -> None:
        """Count one answered prediction by its top-1 class and observe its confidence
        (``trace_id``: an exemplar, for an answer whose trace is kept)."""
        families = self.families
        families.predictions.inc((*model, class_label))
        families.confidence.observe(model, confidence, trace_id or None)

    def set_quality_reference(
        self,
        model: ModelKey,
        fractions: Mapping[str, Mapping[str, float]] | None,
        *,
        sha256: str = "",
        images: int = 0,
        confidence_mean: float = 0.0,
        confidence_stddev: float = 0.0,
    ) -> None:
        """Publish a version's reference (its buckets' shares, file hash, image count and
        confidence) and create its observation counters at 0, one per bucket, so that
        every bucket's rate exists from the first answer; ``fractions`` None: the
        version has no usable reference (any earlier one's series go)."""
        wanted = {(s, b) for s, shares in (fractions or {}).items() for b in shares}
        self._drop_quality(model, keep=wanted)
        if fractions is None:
            return
        for signal, shares in fractions.items():
            for bucket, share in shares.items():
                self.model_quality_reference_fraction.labels(*model, signal, bucket).set(share)
                series = (*model, signal, bucket)
                self.families.quality_observations.touch(series)
                self._quality_buckets.add(series)
        self.model_quality_reference_info.labels(*model, sha256).set(1)
        self._quality_sha[model] = sha256
        self.model_quality_reference_images.labels(*model).set(images)
        confidence = self.model_quality_reference_confidence
        confidence.labels(*model, "mean").set(confidence_mean)
        confidence.labels(*model, "stddev").set(confidence_stddev)

    def _drop_quality(
        self, model: ModelKey, keep: AbstractSet[tuple[str, str]] = frozenset()
    ) -> None:
        """Forget a version's quality series before it gets a new reference or none.

        One process: remove them. Several workers: prometheus_client cannot remove a
        series from the shared files, so the old reference's info gauge says 0 and each
        bucket only it had says -1 (`RETIRED_BUCKET`), which the rules leave out: the
        PSI of the new reference counts only its own buckets.
        """
        old = [series for series in self._quality_buckets if series[:2] == model]
        self._quality_buckets.difference_update(old)
        sha = self._quality_sha.pop(model, None)
        if self.multiprocess_dir is not None:
            if sha is not None:
                self.model_quality_reference_info.labels(*model, sha).set(0)
            for _, _, signal, bucket in old:
                if (signal, bucket) not in keep:
                    self.model_quality_reference_fraction.labels(*model, signal, bucket).set(
                        RETIRED_BUCKET
                    )
            return
        for series in old:
            self.families.quality_observations.remove(series)
        labels = dict(zip(MODEL_LABELS, model, strict=True))
        for metric in self._quality_metrics:
            metric.remove_by_labels(labels)

    def record_quality(self, model: ModelKey, buckets: Iterable[tuple[str, str]]) -> None:
        """Count answers into the bucket of each of their signals: one (signal, bucket)
        pair per answer and signal, each distinct pair incremented once."""
        known, observations = self._quality_buckets, self.families.quality_observations
        for (signal, bucket), count in collections.Counter(buckets).items():
            series = (*model, signal, bucket)
            if series in known:
                observations.inc(series, count)

    def record_error(self, endpoint: str, exception_type: str) -> None:
        """Count an exception raised while serving ``endpoint``."""
        self.http.record_error(endpoint, exception_type)

    def record_inference_error(self, model: ModelKey, error_type: str, count: int = 1) -> None:
        """Count requests whose forward pass failed."""
        families = self.families
        with families.batcher_lock:
            families.inference_errors.inc((*model, error_type), count)

    def record_batcher_crash(self, model: ModelKey) -> None:
        """Count an unexpected failure of the batcher's worker loop."""
        self.batcher_crashes_total.labels(*model).inc()

    def record_api_keys_reload_failure(self) -> None:
        """Count a change of ``API_KEYS_FILE`` that could not be read."""
        self.api_keys_reload_failures_total.inc()

    def record_model_load_failure(self, model: ModelKey) -> None:
        """Count a failed attempt to load ``model``."""
        self.model_load_failures_total.labels(*model).inc()

    def record_model_load(self, model: ModelKey, seconds: float) -> None:
        """Count a model version put into service and observe how long loading took."""
        self.model_loads_total.labels(*model).inc()
        self.model_load_duration_seconds.labels(*model).observe(seconds)

    def record_model_unload(self, model: ModelKey) -> None:
        """Count a model version taken out of service."""
        self.model_unloads_total.labels(*model).inc()

    def record_rejection(self, reason: str) -> None:
        """Count a refusal by its bounded reason."""
        self.requests_rejected_total.labels(reason).inc()

    def set_queue_size(self, model: ModelKey, size: int) -> None:
        """Set how many requests wait for the forward pass."""
        self.families.queue_size.set(model, size)

    def record_queue_wait(self, model: ModelKey, seconds: float) -> None:
        """Observe how long one request waited for its forward pass."""
        families = self.families
        with families.batcher_lock:
            families.queue_wait.observe(model, seconds)

    def record_image(
        self, size_bytes: int, width: int, height: int, preprocess_seconds: float
    ) -> None:
        """Observe one decoded image: bytes, dimensions and preprocessing time."""
        families = self.families
        families.image_bytes.observe((), size_bytes)
        families.image_width.observe((), width)
        families.image_height.observe((), height)
        families.preprocess.observe((), preprocess_seconds)

    def record_decode_failure(self, reason: str) -> None:
        """Count an upload that could not be decoded."""
        self.image_decode_failures_total.labels(reason).inc()

    def record_protocol_error(self, reason: str) -> None:
        """Count a request cut off below the router, by its bounded reason."""
        self.http_protocol_errors_total.labels(reason).inc()

    def record_trace_kept(self, reason: str) -> None:
        """Count a request whose trace tail sampling kept, by why."""
        self.traces_kept_total.labels(reason).inc()

    def record_span_outcome(self, outcome: str, count: int) -> None:
        """Count spans exported (``outcome="exported"``) or dropped for ``outcome``."""
        if outcome == "exported":
            self.tracing_spans_exported_total.inc(count)
        else:
            self.tracing_spans_dropped_total.labels(outcome).inc(count)

    def set_model_state(self, model: ModelKey, loaded: bool, memory_bytes: int = 0) -> None:
        """Publish whether ``model`` is ready and how much memory it holds."""
        self.model_loaded.labels(*model).set(1 if loaded else 0)
        self.model_memory_usage_bytes.labels(*model).set(memory_bytes)

    def initialise_series(
        self,
        *,
        exception_types: Iterable[str] = (),
        decode_failure_reasons: Iterable[str] = (),
        span_drop_reasons: Iterable[str] = (),
        trace_keep_reasons: Iterable[str] = (),
        protocol_error_reasons: Iterable[str] = (),
    ) -> None:
        """Create the zero-valued series that dashboards and alerts expect before traffic.

        A counter that appears with its first increment already in it hides that
        increment from ``rate()``; the prediction endpoints' outcomes therefore exist
        at 0 from start-up, so SLO ratios are right from the first request. It also
        means bad input never adds a series: every label value it can produce is
        already there. Each model's own series come with `initialise_model`.
        """
        for endpoint in PREDICT_ENDPOINTS:
            for status in PREDICT_STATUSES:
                self.http.requests.touch(("POST", endpoint, status))
            for exception_type in exception_types:
                self.http.exceptions.touch((endpoint, exception_type))
            self.http.duration.touch(("POST", endpoint))
        for reason in decode_failure_reasons:
            self.image_decode_failures_total.labels(reason)
        for reason in span_drop_reasons:
            self.tracing_spans_dropped_total.labels(reason)
        for reason in trace_keep_reasons:
            self.traces_kept_total.labels(reason)
        for reason in protocol_error_reasons:
            self.http_protocol_errors_total.labels(reason)
        for reason in REJECT_REASONS:
            self.requests_rejected_total.labels(reason)

    def initialise_grpc(self) -> None:
        """Create the gRPC service's ``ModelInfer`` series at 0, for every outcome that
        dashboards and alerts read (call when the service runs)."""
        for code in GRPC_INFER_CODES:
            self.families.grpc_requests.touch(("ModelInfer", code))
        self.families.grpc_duration.touch(("ModelInfer",))

    def initialise_model(self, model: ModelKey) -> None:
        """Create a model version's series at 0 (not loaded) when the gateway first knows it."""
        self.families.inference_duration.touch(model)
        self.families.queue_size.set(model, 0)
        for counter in (
            self.batcher_crashes_total, self.model_load_failures_total,
            self.model_loads_total, self.model_unloads_total,
        ):  # fmt: skip
            counter.labels(*model)
        self.set_model_state(model, loaded=False)
        self._known.add(model)
        self._publish_known()

    def forget_model(self, model: ModelKey) -> None:
        """Drop every series of a version taken out of service: no alert mistakes it for
        a model that failed to load, and rolling versions does not grow the exposition
        (``rate()`` reads a vanished counter as a reset).

        prometheus_client cannot remove series in multiprocess mode: each worker's
        values stay in its files (those of workers that died too). There this worker
        only stops listing the version in its ``models-<pid>.json``, and every scrape
        leaves out the series of versions that no live worker lists
        (`ServedModelsOnly`); the values themselves are never rewritten, so the series
        of versions still served keep counting, and a version served again continues
        from its old counts. The library's families (`RequestFamilies`) are filtered
        the same way, and in one process lose the version's series like the others.
        """
        self._known.discard(model)
        for family in self.families.per_model:
            for series in [series for series in list(family.values) if series[:2] == model]:
                if self.multiprocess_dir is None:
                    family.remove(series)
                elif isinstance(family, HistogramFamily):
                    # The values stay (filtered at the scrape); this worker's examples
                    # of the version's earlier life go.
                    family.drop_exemplars(series)
        if self.multiprocess_dir is not None:
            self._publish_known()
            return
        self._quality_buckets = {s for s in self._quality_buckets if s[:2] != model}
        labels = dict(zip(MODEL_LABELS, model, strict=True))
        for metric in self._per_model:
            metric.remove_by_labels(labels)

    def _publish_known(self) -> None:
        """Write the versions this worker knows to ``models-<pid>.json`` (multiprocess
        mode), replacing the file at once so a scrape never reads half of it."""
        if self.multiprocess_dir is None:
            return
        target = _known_models_file(self.multiprocess_dir, os.getpid())
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps(sorted(self._known)))
        os.replace(partial, target)

    def model_totals(self, models: Iterable[ModelKey]) -> dict[ModelKey, ModelTotals]:
        """What the counters say each model version did since start-up, summed over
        the workers in multiprocess mode (the statistics extension's source): exact
        like a scrape, which asks every worker for its values first
        (`golden_signals.metrics.SignalRegistry.collect`)."""
        wanted = {model: ModelTotals() for model in models}
        sums: dict[tuple[ModelKey, str], float] = {}
        for family in self.families.registry.collect():
            if family.name not in _TOTALS_FAMILIES:
                continue
            for sample in family.samples:
                key = (sample.labels.get("model_name", ""), sample.labels.get("model_version", ""))
                if key in wanted and sample.name in _TOTALS_SAMPLES:
                    sums[key, sample.name] = sums.get((key, sample.name), 0.0) + sample.value
        return {
            key: ModelTotals(
                **{field: sums.get((key, name), 0.0) for name, field in _TOTALS_SAMPLES.items()}
            )
            for key in wanted
        }

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Expose the registry, in OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess_dir is None:
            return encoder(self.registry), content_type
        return encoder(multiprocess_registry(self.multiprocess_dir, self.families)), content_type

    def mark_process_dead(self, pid: int) -> None:
        """Drop a stopped worker's live gauges and its list of known versions
        (multiprocess mode only)."""
        if self.multiprocess_dir is not None:
            prom_multiprocess.mark_process_dead(pid, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            _known_models_file(self.multiprocess_dir, pid).unlink(missing_ok=True)


def multiprocess_registry(
    directory: str, families: RequestFamilies | None = None
) -> CollectorRegistry:
    """A registry that sums the metric files every worker wrote to ``directory`` and the
    library's families every worker published (`RequestFamilies`: ``families``, a
    worker's own, its values in memory and the others' files; or for a process that
    serves none, the parent's ``METRICS_PORT``, ones that only read the workers'
    files), both without the series of versions no worker serves any more, and the
    live workers' ``process_*`` series."""
    aggregate = CollectorRegistry()
    summed = prom_multiprocess.MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
    aggregate.register(ServedModelsOnly(summed, directory))
    aggregate.register(WorkerProcessCollector(directory))
    published = (families if families is not None else RequestFamilies(directory)).registry
    aggregate.register(ServedModelsOnly(published, directory))
    return aggregate


def _known_models_file(directory: str | os.PathLike[str], pid: int) -> Path:
    """Where worker ``pid`` lists the model versions it knows (`Metrics.initialise_model`)."""
    return Path(directory) / f"models-{pid}.json"


def served_models(directory: str | os.PathLike[str]) -> frozenset[ModelKey]:
    """The model versions that at least one live worker knows, read from the
    ``models-<pid>.json`` files in the multiprocess ``directory``."""
    served: set[ModelKey] = set()
    for path in Path(directory).glob("models-*.json"):
        pid = path.stem.removeprefix("models-")
        if not pid.isdigit() or not _is_worker(int(pid)):
            continue  # a worker that stopped, or died without saying so
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # gone since the listing
        served.update((str(name), str(version)) for name, version in entries)
    return frozenset(served)


class ServedModelsOnly(Collector):
    """``source``'s metrics without the series of model versions no live worker serves.

    Multiprocess mode cannot remove a series: prometheus_client keeps every value in
    each worker's memory-mapped file, with no way to delete one, and the summing
    collector reads the files of workers that died too. Rewriting those files would
    mean writing into another live process's mmap without a lock, and a value set
    back to zero would still be a series. Instead each worker lists the versions it
    knows (`served_models`) and the scrape drops the samples whose ``model_name`` and
    ``model_version`` no live worker lists. The filter is the union over workers, so
    the answer does not depend on which worker (or the parent, on ``METRICS_PORT``)
    answers, and a version leaves only once the last worker has retired it; no value
    is ever changed, so the counters of versions still served never go down.
    """

    def __init__(self, source: Collector, directory: str | os.PathLike[str]) -> None:
        self._source = source
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        served = served_models(self._directory)
        for family in self._source.collect():
            family.samples = [
                sample
                for sample in family.samples
                if not {"model_name", "model_version"} <= sample.labels.keys()
                or (sample.labels["model_name"], sample.labels["model_version"]) in served
            ]
            yield family


class WorkerProcessCollector(Collector):
    """The standard ``process_*`` series of every live worker, for multiprocess mode.

    prometheus_client's `ProcessCollector` describes the process it runs in, which in
    multiprocess mode is whichever worker answered the scrape. This one reads
    ``/proc/<pid>`` of every live worker and labels each series with its ``pid``, so
    ``sum(rate(process_cpu_seconds_total[5m]))`` is the server's CPU and a worker that
    stops or is restarted ends its own series instead of making a summed counter fall
    (which ``rate()`` would read as a reset, counting every survivor's CPU again). A
    live worker is a process with a live gauge file in the multiprocess directory whose
    parent is the server's: the worker answering (a sibling) or the parent itself
    (``METRICS_PORT``), so a stale file whose pid was reused counts nothing.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._directory = Path(directory)

    def worker_pids(self) -> list[int]:
        """Pids of the workers alive now."""
        found = {path.stem.rsplit("_", 1)[-1] for path in self._directory.glob("gauge_live*_*.db")}
        return sorted(int(pid) for pid in found if pid.isdigit() and _is_worker(int(pid)))

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.worker_pids():

            def this_pid(pid: int = pid) -> int:
                return pid

            for family in ProcessCollector(pid=this_pid, registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = copy.copy(family)
                    merged.samples = []
                merged.samples.extend(
                    sample._replace(labels={**sample.labels, "pid": str(pid)})
                    for sample in family.samples
                )
        yield from families.values()


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` is a live worker of this server: this process, a sibling, or a
    child of this process (the parent serving ``METRICS_PORT``). A pid reused by an
    unrelated process after a worker died is not."""
    return _parent_of(pid) in {os.getpid(), os.getppid()}


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from ``/proc`` (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def serve_metrics_port(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve ``registry`` at ``http://host:port/metrics`` on a thread; returns a stopper.

    prometheus_client's own server (OpenMetrics and exemplars when the scraper asks),
    for deployments that keep metrics off the public port (``METRICS_PORT``).
    """
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
