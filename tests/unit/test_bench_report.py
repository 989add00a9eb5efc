"""The benchmark report's arithmetic: profile attribution and the CPU split."""

from __future__ import annotations

from bench import http_bench, limit
from bench.gil_profile import OTHER, parse_raw, part_of
from bench.run_all import cpu_split

SITE = "/venv/lib/python3.11/site-packages"
LOOP = "Runner.run (/usr/lib/python3.11/asyncio/runners.py:118)"
MIDDLEWARE = (
    f"OpenTelemetryMiddleware.__call__ ({SITE}/opentelemetry/instrumentation/asgi/__init__.py:703)"
)
ROUTE = f"app ({SITE}/fastapi/routing.py:438)"
SPAN = f"Tracer.start_span ({SITE}/opentelemetry/sdk/trace/__init__.py:1138)"
JSON = "encode (/usr/lib/python3.11/json/encoder.py:200)"
LOG = f"JSONRenderer.__call__ ({SITE}/structlog/processors.py:300)"


def test_a_sample_belongs_to_the_innermost_part_on_its_stack() -> None:
    # The instrumentation wraps every request: framework work under it is the framework's.
    assert part_of([LOOP, MIDDLEWARE, ROUTE]) == "FastAPI, Starlette, pydantic, routes"
    assert part_of([LOOP, MIDDLEWARE, ROUTE, SPAN]).startswith("tracing")
    # Frames of no part (the json module) count for the nearest part above them.
    assert part_of([LOOP, ROUTE, LOG, JSON]).startswith("logs")
    assert part_of(["<module> (<string>:1)"]) == OTHER


def test_raw_stacks_are_counted_per_part() -> None:
    raw = "\n".join(
        [f"{LOOP};{ROUTE} 3", f"{LOOP};{ROUTE};{SPAN} 5", f"{LOOP};{MIDDLEWARE} 2", "", "junk"]
    )
    samples = parse_raw(raw)
    assert samples["FastAPI, Starlette, pydantic, routes"] == 3
    assert samples["tracing (OpenTelemetry SDK, instrumentation)"] == 7
    assert sum(samples.values()) == 10


def test_the_cpu_split_takes_every_column_from_one_repeat() -> None:
    # Per-part medians of these repeats would give 2.0 + 11.0 for a total of 13.5.
    ceiling = {
        "best": "2x1/b8",
        "cpu_runs": {
            "cpu_ms": {"2x1/b8": [14.0, 13.5, 12.0]},
            "preprocess_ms": {"2x1/b8": [2.0, 2.5, 1.5]},
            "forward_ms": {"2x1/b8": [12.0, 11.0, 10.5]},
        },
    }
    assert set(ceiling["cpu_runs"]) == set(limit.CPU_PARTS)
    runs = [
        {"server_cpu_ms": 16.0, "main_cpu_ms": 5.0},
        {"server_cpu_ms": 19.0, "main_cpu_ms": 6.0},
        {"server_cpu_ms": 15.0, "main_cpu_ms": 4.5},
    ]
    http = {"runs": {http_bench.DEFAULTS: {"32": runs}}}
    rows = cpu_split(ceiling, http).splitlines()
    assert rows[2].endswith("| 2.5 | 11.0 | 13.5 |")
    assert rows[3].endswith("| 5.0 | 11.0 | 16.0 |")
    assert len(rows) == 4  # no observability-off runs: no row for them
