"""``golden-signals rules|dashboard --app shop:app``: generated from the app's own routes,
accepted by promtool, and the alerts fire where the objectives are missed and stay
quiet where they are met (promtool's rule unit tests, over simulated hours)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golden_signals.cli import main
from golden_signals.rules import Objectives, generate_rules

HERE = Path(__file__).parent
ROUTES = ["/admin/reset", "/boom", "/orders", "/reports/stream", "/v1/items/{item_id}"]


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is needed (Debian's prometheus package; `make tools` installs it)"
    return found


def _generate(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "out"
    sys.path.insert(0, str(HERE))
    try:
        assert main([*args, "--app", "shop:app", "--out", str(out)]) == 0
    finally:
        sys.path.remove(str(HERE))
    return out


def test_the_routes_are_the_apps_own_templates_with_their_prefixes(tmp_path: Path) -> None:
    routes = _generate(tmp_path, "routes").read_text().split()
    assert routes == ROUTES  # /health, /metrics and the API docs are left out


def test_the_rules_pass_promtool(tmp_path: Path) -> None:
    rules = _generate(tmp_path, "rules", "--availability", "99.5", "--latency-p99", "300ms")
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    groups = yaml.safe_load(rules.read_text())["groups"]
    assert sum(len(g["rules"]) for g in groups) == 7 * 2 + 4 * 2


def test_rules_for_one_job_keep_it_and_pass_promtool(tmp_path: Path) -> None:
    rules = _generate(tmp_path, "rules", "--job", "shop")
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = yaml.safe_load(rules.read_text())["groups"][0]["rules"]
    assert all('job="shop"' in r["expr"] and "by (job, endpoint)" in r["expr"] for r in records)


def test_a_threshold_between_buckets_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(HERE))
    try:
        code = main(["rules", "--app", "shop:app", "--latency-p99", "280ms"])
    finally:
        sys.path.remove(str(HERE))
    assert code == 2
    assert "0.28s is not an upper bound of the latency buckets" in capsys.readouterr().err


def _series(
    endpoint: str, per_minute: int, bad_per_minute: int, slow_per_minute: int, minutes: int
) -> list[dict[str, str]]:
    """Counter series of ``minutes`` of traffic at a steady rate (promtool's notation)."""
    good = per_minute - bad_per_minute
    fast = per_minute - slow_per_minute
    labels = f'endpoint="{endpoint}",method="GET"'
    answered = {
        "series": f'http_requests_total{{{labels},status="200"}}',
        "values": f"0+{good}x{minutes}",
    }
    return [
        *([answered] if good else []),  # a route that only fails has no 200 series at all
        {
            "series": f'http_requests_total{{{labels},status="500"}}',
            "values": f"0+{bad_per_minute}x{minutes}",
        },
        {
            "series": f'http_request_duration_seconds_bucket{{{labels},le="0.3"}}',
            "values": f"0+{fast}x{minutes}",
        },
        {
            "series": f"http_request_duration_seconds_count{{{labels}}}",
            "values": f"0+{per_minute}x{minutes}",
        },
    ]


def test_the_alerts_fire_for_the_route_that_misses_and_stay_quiet_for_the_others(
    tmp_path: Path,
) -> None:
    rules = generate_rules(
        ROUTES, Objectives(availability=99.5, latency_seconds=0.3, latency_target=99.0)
    )
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    minutes = 4 * 60
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 10 % errors, all fast: burns availability 20x (every alert), not latency.
                    *_series("/orders", 100, 10, 0, minutes),
                    # No errors, 5 % slower than 300 ms: burns latency 5x (tickets, no page).
                    *_series("/v1/items/{item_id}", 100, 0, 5, minutes),
                    # Down: every answer a 500, never one 200.
                    *_series("/boom", 50, 50, 0, minutes),
                    # Within both objectives: 0.2 % errors, 0.5 % slow.
                    *_series("/reports/stream", 1000, 2, 5, minutes),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "200m",
                        "alertname": "AppAvailabilityBudgetBurn",
                        "exp_alerts": [
                            _alert(rules, "availability", severity, burn, window, endpoint, value)
                            for endpoint, value in (("/orders", "10%"), ("/boom", "100%"))
                            for severity, burn, window in (
                                ("page", "14.4", "1h"),
                                ("page", "6.0", "6h"),
                                ("ticket", "3.0", "1d"),
                                ("ticket", "1.0", "3d"),
                            )
                        ],
                    },
                    {
                        "eval_time": "200m",
                        "alertname": "AppLatencyBudgetBurn",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "latency",
                                "ticket",
                                burn,
                                window,
                                "/v1/items/{item_id}",
                                "5%",
                            )
                            for burn, window in (("3.0", "1d"), ("1.0", "3d"))
                        ],
                    },
                    # Before the burns have lasted their alerts' `for`: nothing yet.
                    {"eval_time": "1m", "alertname": "AppAvailabilityBudgetBurn", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = subprocess.run(
        [_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alert(
    rules: dict[str, object],
    slo: str,
    severity: str,
    burn: str,
    window: str,
    endpoint: str,
    value: str,
) -> dict[str, dict[str, str]]:
    """The alert promtool should see firing: its labels and rendered annotations."""
    return {
        "exp_labels": {
            "severity": severity,
            "slo": slo,
            "burn_rate": burn,
            "window": window,
            "endpoint": endpoint,
        },
        "exp_annotations": _annotations(rules, slo, burn, endpoint, value),
    }


def _annotations(
    rules: dict[str, object], slo: str, burn: str, endpoint: str, value: str
) -> dict[str, str]:
    """The annotations the generated alert renders for ``endpoint`` at ``value``."""
    groups = rules["groups"]  # type: ignore[index]
    (alert,) = [
        rule for group in groups for rule in group["rules"]
        if rule.get("labels", {}).get("slo") == slo and rule["labels"]["burn_rate"] == burn
    ]  # fmt: skip
    return {
        key: text.replace("{{ $labels.endpoint }}", endpoint).replace(
            "{{ $value | humanizePercentage }}", value
        )
        for key, text in alert["annotations"].items()
    }


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(_generate(tmp_path, "dashboard").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 8
    assert any("http_response_first_byte_seconds" in expr for expr in exprs)
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:query:{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    check = tmp_path / "dashboard-queries.yml"
    check.write_text(yaml.safe_dump(as_rules, width=1000))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(check)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
