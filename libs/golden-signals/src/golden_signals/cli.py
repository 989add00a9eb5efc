"""``golden-signals rules|dashboard --app module:app``: objectives from the app's routes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from golden_signals.instrument import Instrumentation
from golden_signals.metrics import LATENCY_BUCKETS, HistogramFamily
from golden_signals.routes import declared_routes
from golden_signals.rules import (
    DEFAULT_SKIPPED,
    Objectives,
    dashboard_json,
    generate_dashboard,
    generate_rules,
    parse_duration,
    slo_routes,
)


def load_app(reference: str) -> object:
    """The object ``module:attribute`` names (the current directory importable, as
    uvicorn does)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"--app takes module:attribute, got {reference!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    app: object = module
    for part in attribute.split("."):
        app = getattr(app, part)
    return app


def _buckets(app: object) -> tuple[float, ...]:
    """The latency buckets ``app`` was instrumented with (the defaults if it was not)."""
    instrumentation = getattr(app, "_golden_signals", None)
    if isinstance(instrumentation, Instrumentation):
        family = instrumentation.registry.families.get("http_request_duration_seconds")
        if isinstance(family, HistogramFamily):
            return family.bounds
    return LATENCY_BUCKETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="golden-signals", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("rules", "Prometheus recording rules and burn-rate alerts (YAML)"),
        ("dashboard", "a Grafana dashboard (JSON)"),
        ("routes", "the route templates that get objectives, one per line"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--app", required=True, help="module:attribute of the ASGI app")
        command.add_argument("--availability", type=float, default=99.5, help="percent (99.5)")
        command.add_argument(
            "--latency-p99", default="300ms", help="threshold 99%% of requests meet (300ms)"
        )
        command.add_argument(
            "--latency-target", type=float, default=99.0, help="percent within the threshold (99)"
        )
        command.add_argument("--period", default="30d", help="the objectives' period (30d)")
        command.add_argument(
            "--skip", action="append", default=[],
            help="a route left out besides the scrape, probes and API docs (repeatable)",
        )  # fmt: skip
        command.add_argument(
            "--job", help="only this Prometheus job's series, the job kept in each ratio"
        )
        command.add_argument("--service", default="app", help="names the rule groups and alerts")
        command.add_argument("--out", type=Path, help="write here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 on success."""
    args = _parser().parse_args(argv)
    app = load_app(args.app)
    routes = slo_routes(declared_routes(app), (*DEFAULT_SKIPPED, *args.skip))
    try:
        objectives = Objectives(
            availability=args.availability,
            latency_seconds=parse_duration(args.latency_p99),
            latency_target=args.latency_target,
            period=args.period,
        )
        if args.command == "routes":
            text = "".join(f"{route}\n" for route in routes)
        elif args.command == "rules":
            rules = generate_rules(
                routes, objectives, _buckets(app), service=args.service, job=args.job
            )
            text = yaml.safe_dump(rules, sort_keys=False, width=1000)
        else:
            text = dashboard_json(
                generate_dashboard(routes, objectives, service=args.service, job=args.job)
            )
    except ValueError as exc:
        print(f"golden-signals: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
