"""SLO recording rules, multi-window burn-rate alerts and a Grafana dashboard, generated
from an app's own routes.

Two objectives per route (the ``endpoint`` label): **availability** (the share of
requests answered without a 5xx) and **latency** (the share answered within a threshold,
read from the histogram bucket whose upper bound is that threshold: a p99 of 300 ms is
"99 % within 300 ms"). Each has its error ratio recorded over the windows the alerts
read, and the alerts are the multi-window, multi-burn-rate pairs of Google's SRE
workbook (chapter 5): page when the budget of the objective's period would be gone in
about two days (14.4× over 1 h and 5 m) or five (6× over 6 h and 30 m), open a ticket
at 3× (1 d and 2 h) and 1× (3 d and 6 h). The short window of each pair makes an alert
stop soon after the burn does. A route with no traffic in a window has no ratio there
(0/0), so it never alerts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.utils import floatToGoString

from golden_signals.metrics import LATENCY_BUCKETS

#: Windows over which each error ratio is recorded (the alerts' pairs use all of them).
WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
#: (severity, burn rate, long window, short window, for): the workbook's four alerts.
BURN_ALERTS: tuple[tuple[str, float, str, str, str], ...] = (
    ("page", 14.4, "1h", "5m", "2m"),
    ("page", 6.0, "6h", "30m", "15m"),
    ("ticket", 3.0, "1d", "2h", "1h"),
    ("ticket", 1.0, "3d", "6h", "3h"),
)
#: Routes left out of the objectives by default: the scrape, probes, API documentation.
DEFAULT_SKIPPED: tuple[str, ...] = (
    "/metrics", "/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc",
    "/openapi.json",
)  # fmt: skip

_RE2_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")


@dataclass(frozen=True, slots=True)
class Objectives:
    """The targets: ``availability`` and ``latency_target`` in percent (e.g. 99.5 and
    99.0), ``latency_seconds`` the threshold (an upper bound of the latency buckets),
    over a ``period`` such as ``30d``."""

    availability: float = 99.5
    latency_seconds: float = 0.3
    latency_target: float = 99.0
    period: str = "30d"

    def __post_init__(self) -> None:
        """Refuse targets that cannot be objectives."""
        for name in ("availability", "latency_target"):
            value = getattr(self, name)
            if not 0 < value < 100:
                raise ValueError(f"{name} must be a percentage between 0 and 100, got {value}")
        if self.latency_seconds <= 0:
            raise ValueError("the latency threshold must be positive")


def parse_duration(text: str) -> float:
    """Seconds in ``300ms``, ``0.3s``, ``2s`` or ``0.3`` (seconds)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use 300ms or 0.3s)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def slo_routes(
    routes: Iterable[tuple[str, frozenset[str]]], skipped: Sequence[str] = DEFAULT_SKIPPED
) -> list[str]:
    """The HTTP route templates that get objectives: every declared route but
    WebSocket routes and the ``skipped`` ones, sorted, each once."""
    return sorted(
        {path for path, methods in routes if path not in skipped and methods != {"WEBSOCKET"}}
    )


def _matcher(routes: Sequence[str], job: str | None = None) -> str:
    """PromQL matchers for exactly these ``endpoint`` values (a regex in a double-quoted
    string, so its backslashes doubled), and for ``job`` when given."""
    alternatives = "|".join(_RE2_SPECIAL.sub(r"\\\1", route) for route in routes)
    quoted = alternatives.replace("\\", "\\\\").replace('"', '\\"')
    matcher = f'endpoint=~"{quoted}"'
    return matcher if job is None else f'job="{job}",{matcher}'


def _by(job: str | None) -> str:
    """The labels each ratio keeps: the route, and the job when rules are per job."""
    return "job, endpoint" if job is not None else "endpoint"


def _bound(seconds: float, buckets: Sequence[float]) -> str:
    """The ``le`` label value of the bucket bounded at ``seconds`` (as Prometheus'
    client libraries write it)."""
    for bound in buckets:
        if abs(bound - seconds) < 1e-9:
            return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
    raise ValueError(
        f"the latency threshold {seconds}s is not an upper bound of the latency buckets "
        f"({', '.join(str(b) for b in buckets)}): the objective would be read between "
        "buckets; pick one of them or instrument with buckets that include it"
    )


def generate_rules(
    routes: Sequence[str],
    objectives: Objectives,
    buckets: Sequence[float] = LATENCY_BUCKETS,
    *,
    service: str = "app",
    job: str | None = None,
) -> dict[str, Any]:
    """A Prometheus rules file (as data, for ``yaml.safe_dump``) for ``routes``; with
    ``job``, only that job's series, the job kept in every ratio (several services'
    rules side by side in one Prometheus)."""
    if not routes:
        raise ValueError("no routes to set objectives for")
    match = _matcher(routes, job)
    by = _by(job)
    le = _bound(objectives.latency_seconds, buckets)
    requests = f'http_requests_total{{{match},method!="WEBSOCKET"}}'
    records: list[dict[str, Any]] = []
    for window in WINDOWS:
        total = f"sum by ({by}) (rate({requests}[{window}]))"
        errors = f'sum by ({by}) (rate(http_requests_total{{{match},method!="WEBSOCKET",status=~"5.."}}[{window}]))'
        records.append({
            "record": f"endpoint:slo_availability_errors:ratio_rate{window}",
            # A route without a 5xx yet has no error series: 0, not no value.
            "expr": f"({errors} or 0 * {total}) / {total}",
        })  # fmt: skip
        bucket = f'http_request_duration_seconds_bucket{{{match},le="{le}"}}'
        count = f"http_request_duration_seconds_count{{{match}}}"
        records.append({
            "record": f"endpoint:slo_latency_errors:ratio_rate{window}",
            "expr": f"1 - sum by ({by}) (rate({bucket}[{window}])) / sum by ({by}) (rate({count}[{window}]))",
        })  # fmt: skip
    budgets = {
        "availability": 1 - objectives.availability / 100,
        "latency": 1 - objectives.latency_target / 100,
    }
    alerts: list[dict[str, Any]] = []
    for slo, budget in budgets.items():
        for severity, burn, long, short, hold in BURN_ALERTS:
            threshold = round(burn * budget, 10)
            name = f"{_camel(service)}{slo.capitalize()}BudgetBurn"
            alerts.append({
                "alert": name,
                "expr": f"endpoint:slo_{slo}_errors:ratio_rate{long} > {threshold}"
                        f" and endpoint:slo_{slo}_errors:ratio_rate{short} > {threshold}",
                "for": hold,
                "labels": {"severity": severity, "slo": slo, "burn_rate": str(burn), "window": long},
                "annotations": {
                    "summary": f"{{{{ $labels.endpoint }}}} is spending its {slo} error budget {burn}x too fast",
                    "description": (
                        f"Over the last {long} (and {short}) the share of "
                        + ("requests answered with a 5xx" if slo == "availability"
                           else f"requests slower than {objectives.latency_seconds}s")
                        + " on {{ $labels.endpoint }} was {{ $value | humanizePercentage }}: "
                        + f"at this rate the {objectives.period} budget of {budget:.4%} lasts "
                        + f"{_days(objectives.period, burn)}."
                    ),
                },
            })  # fmt: skip
    return {
        "groups": [
            {"name": f"{service}-slo-ratios", "rules": records},
            {"name": f"{service}-slo-alerts", "rules": alerts},
        ]
    }


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _days(period: str, burn: float) -> str:
    match = re.fullmatch(r"(\d+)d", period)
    if match is None:
        return f"1/{burn:g} of {period}"
    return f"about {int(match.group(1)) / burn:.1f} days"


def generate_dashboard(
    routes: Sequence[str], objectives: Objectives, *, service: str = "app", job: str | None = None
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) of the golden signals per route, with the
    objectives' error ratios and the budget left (``job``: that job's series only)."""
    match = _matcher(routes, job)
    in_flight = (
        f'sum(active_requests{{job="{job}"}})' if job is not None else "sum(active_requests)"
    )
    budget = 1 - objectives.availability / 100
    panels: list[tuple[str, str, str, str]] = [
        ("Traffic (requests/s)", f"sum by (endpoint) (rate(http_requests_total{{{match}}}[5m]))", "reqps", "{{endpoint}}"),
        ("Errors (5xx share)", f'sum by (endpoint) (rate(http_requests_total{{{match},status=~"5.."}}[5m])) / sum by (endpoint) (rate(http_requests_total{{{match}}}[5m]))', "percentunit", "{{endpoint}}"),
        ("Latency p99", f"histogram_quantile(0.99, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket{{{match}}}[5m])))", "s", "{{endpoint}}"),
        ("Latency p50", f"histogram_quantile(0.5, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket{{{match}}}[5m])))", "s", "{{endpoint}}"),
        ("Time to first byte p99", f"histogram_quantile(0.99, sum by (endpoint, le) (rate(http_response_first_byte_seconds_bucket{{{match}}}[5m])))", "s", "{{endpoint}}"),
        ("Saturation (requests in flight)", in_flight, "short", "in flight"),
        ("Availability burn rate (1h)", f"endpoint:slo_availability_errors:ratio_rate1h / {budget:.10g}", "short", "{{endpoint}}"),
        ("Latency burn rate (1h)", f"endpoint:slo_latency_errors:ratio_rate1h / {1 - objectives.latency_target / 100:.10g}", "short", "{{endpoint}}"),
        (f"Availability budget left ({objectives.period})", f'1 - (sum by (endpoint) (increase(http_requests_total{{{match},status=~"5.."}}[{objectives.period}])) / sum by (endpoint) (increase(http_requests_total{{{match}}}[{objectives.period}]))) / {budget:.10g}', "percentunit", "{{endpoint}}"),
    ]  # fmt: skip
    return {
        "title": f"{service}: golden signals",
        "uid": re.sub(r"[^a-z0-9-]", "-", f"{service}-golden-signals".lower())[:40],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]
        },
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": legend, "exemplar": True}],
            }
            for index, (title, expr, unit, legend) in enumerate(panels)
        ],
    }


def dashboard_json(dashboard: dict[str, Any]) -> str:
    """The dashboard as Grafana imports it."""
    return json.dumps(dashboard, indent=2) + "\n"
