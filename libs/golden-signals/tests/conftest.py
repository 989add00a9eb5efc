"""Shared helpers of the library's tests: reading an exposition, logs and spans."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from golden_signals.logs import reset_logging


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an OpenMetrics exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def exemplars(exposition: str, name: str) -> list[dict[str, str]]:
    """The exemplars' labels on the samples ``name`` of an OpenMetrics exposition."""
    return [
        dict(sample.exemplar.labels)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and sample.exemplar is not None
    ]


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The value of the sample ``name`` with exactly ``labels`` (0 when absent)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The JSON log lines written to ``stream``."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Where an instrumented app's log lines go; logging put back afterwards."""
    stream = io.StringIO()
    yield stream
    reset_logging()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The exported spans of an app instrumented with `span_processor`."""
    return InMemorySpanExporter()


@pytest.fixture
def span_processor(spans: InMemorySpanExporter) -> SimpleSpanProcessor:
    """Exports each kept span to `spans` at once."""
    return SimpleSpanProcessor(spans)
