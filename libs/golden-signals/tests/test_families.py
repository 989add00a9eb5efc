"""The metric families an app declares in its `SignalRegistry`, beside the HTTP ones."""

from __future__ import annotations

from conftest import exemplars, samples, value
from golden_signals.metrics import SignalRegistry


def test_a_removed_series_leaves_the_scrape_with_its_exemplars_and_comes_back_anew() -> None:
    registry = SignalRegistry(include=None)
    latency = registry.histogram("job_seconds", "Job time.", ("queue",), buckets=(0.1, 1.0))
    jobs = registry.counter("jobs_total", "Jobs done.", ("queue",))
    for queue in ("fast", "slow"):
        latency.observe((queue,), 0.05, trace_id=f"{queue:0>32}")
        jobs.inc((queue,), 2)
    latency.remove(("slow",))
    jobs.remove(("slow",))
    exposition = _openmetrics(registry)
    found = samples(exposition)
    assert value(found, "jobs_total", queue="fast") == 2
    assert not any(dict(labels).get("queue") == "slow" for _, labels in found)
    assert [e["trace_id"] for e in exemplars(exposition, "job_seconds_bucket")] == [
        f"{'fast':0>32}"
    ]
    jobs.inc(("slow",))  # written again: a new series, from zero
    assert value(samples(_openmetrics(registry)), "jobs_total", queue="slow") == 1


def _openmetrics(registry: SignalRegistry) -> str:
    return registry.render("application/openmetrics-text")[0].decode()
