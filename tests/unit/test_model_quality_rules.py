"""The model-quality rules (deploy/prometheus/rules/model-quality.yml), checked offline.

promtool runs their unit tests (deploy/prometheus/tests/model-quality.test.yml) and a
real Prometheus evaluates them over a real gateway's series in
tests/integration/test_prometheus.py. Here, what needs neither: the rules use the
server's smoothing, drift threshold and signal lists (inference/quality.py), the 6h
rules are the 1h rules, every alert has a runbook, firing and quiet promtool cases and
its place in Alertmanager's inhibitions, the dashboard's row reads what the rules
record, and docs/operations.md's noise-floor numbers are the formula's.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_gateway.inference import quality

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "deploy" / "prometheus" / "rules" / "model-quality.yml"
TESTS_FILE = ROOT / "deploy" / "prometheus" / "tests" / "model-quality.test.yml"
RULES: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
RECORDS: dict[str, str] = {
    r["record"]: r["expr"] for g in RULES["groups"] for r in g["rules"] if "record" in r
}
ALERTS: dict[str, dict[str, Any]] = {
    r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r
}
#: The labels each aggregation level keeps.
LEVELS = {
    "model_version": ["model_name", "model_version"],
    "model_version_signal": ["model_name", "model_version", "signal"],
    "model_version_signal_bucket": ["model_name", "model_version", "signal", "bucket"],
}
#: The fewest live images over the hour for psi_noise < 0.25, by buckets B and
#: reference images m, as docs/operations.md gives them (None: never, m is too small).
NOISE_FLOOR_TABLE = {
    (3, 400): 45,
    (10, 200): 217,
    (10, 400): 141,
    (10, 1000): 116,
    (11, 400): 155,
    (32, 200): None,
    (32, 400): 667,
    (32, 1000): 334,
    (32, 5000): 264,
}


def _excluded_signals(expr: str) -> set[str]:
    (pattern,) = re.findall(r'model_quality_psi:1h\{signal!~"([^"]+)"\}', expr)
    return set(pattern.split("|"))


def test_every_record_is_named_level_metric_operations_and_keeps_its_level() -> None:
    assert len(RECORDS) >= 20
    for name, expr in RECORDS.items():
        level, metric, operation = name.split(":")
        assert level in LEVELS, name
        assert re.fullmatch(r"[a-z_]+", metric) and re.fullmatch(r"[a-z0-9]+", operation), name
        # Every aggregation keeps exactly the level's labels.
        for grouping in re.findall(r"\b(?:sum|max|count) by \(([^)]*)\)", expr):
            assert [label.strip() for label in grouping.split(",")] == LEVELS[level], name


def test_the_six_hour_rules_are_the_one_hour_rules_over_six_hours() -> None:
    hourly = {name: expr for name, expr in RECORDS.items() if name.endswith("1h")}
    assert {name.rsplit(":", 1)[1] for name in hourly} == {
        "increase1h",
        "smoothed1h",
        "1h",
        "mean1h",
    }
    assert "model_version_signal:model_quality_psi:1h" in hourly
    for name, expr in hourly.items():
        twin = name[: -len("1h")] + "6h"
        assert RECORDS[twin] == expr.replace("[1h]", "[6h]").replace("1h", "6h"), twin
    # Everything else is about the reference, the same for both windows.
    rest = set(RECORDS) - set(hourly) - {n[: -len("1h")] + "6h" for n in hourly}
    assert rest and all("reference" in name or "buckets" in name for name in rest), rest


def test_the_shares_use_the_servers_pseudo_count_and_the_psi_its_formula() -> None:
    alpha = quality.SMOOTHING
    assert alpha == 0.5
    reference = RECORDS["model_version_signal_bucket:model_quality_reference_share:smoothed"]
    live = RECORDS["model_version_signal_bucket:model_quality_live_share:smoothed1h"]
    for expr in (reference, live):
        assert f"+ {alpha}\n" in expr or f"+ {alpha})" in expr
        assert f"{alpha} * model_version_signal:model_quality_buckets:count" in expr
    psi = RECORDS["model_version_signal:model_quality_psi:1h"]
    p = "model_version_signal_bucket:model_quality_live_share:smoothed1h"
    q = "model_version_signal_bucket:model_quality_reference_share:smoothed"
    assert f"({p} - {q})" in psi and f"* ln({p} / {q})" in psi
    # Only versions whose signals are on: the info gauge at 1, and everything keyed on it.
    assert RECORDS["model_version:model_quality_reference_info:max"] == (
        "max by (model_name, model_version) (model_quality_reference_info == 1)"
    )


def test_the_alerts_use_the_servers_drift_threshold_and_signal_lists() -> None:
    drift = quality.DRIFT_PSI
    for name in ("ModelInputDrift", "ModelPredictionDrift", "ModelQualityDegraded"):
        expr = ALERTS[name]["expr"]
        for window in ("1h", "6h"):
            assert re.search(rf"model_quality_psi:{window}(\{{[^}}]*\}})? >= {drift}\n", expr), name
            assert f"model_quality_psi_noise:{window} < {drift}\n" in expr, name
    inputs = set(quality.SIGNALS) - _excluded_signals(ALERTS["ModelInputDrift"]["expr"])
    assert inputs == set(quality.INPUT_SIGNALS)
    assert 'model_quality_psi:1h{signal="class"}' in ALERTS["ModelPredictionDrift"]["expr"]
    paged = set(quality.SIGNALS) - _excluded_signals(ALERTS["ModelQualityDegraded"]["expr"])
    assert paged == {*quality.INPUT_SIGNALS, "class"}
    # The confidence ticket and the page ask for the same drop and the same image count.
    drop = " ".join(ALERTS["ModelConfidenceDrop"]["expr"].split())
    assert drop in " ".join(ALERTS["ModelQualityDegraded"]["expr"].split())
    assert "model_version:model_quality_images:increase1h >= 100" in drop


def test_every_alert_has_a_severity_a_runbook_and_firing_and_quiet_promtool_cases() -> None:
    assert set(ALERTS) == {
        "ModelInputDrift",
        "ModelPredictionDrift",
        "ModelConfidenceDrop",
        "ModelQualityDegraded",
    }
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    tests = yaml.safe_load(TESTS_FILE.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["../rules/model-quality.yml"]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for name, rule in ALERTS.items():
        severity = rule["labels"]["severity"]
        assert severity == ("page" if name == "ModelQualityDegraded" else "ticket"), name
        assert rule["for"] == "15m", name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        anchor = annotations["runbook"].removeprefix("docs/operations.md#")
        title = anchor.replace("-", " ").capitalize()
        assert f"\n### {title}\n" in operations, name
        firing = [c for c in cases if c["alertname"] == name and c["exp_alerts"]]
        quiet = [c for c in cases if c["alertname"] == name and not c["exp_alerts"]]
        assert firing and quiet, name
        for case in firing:
            for alert in case["exp_alerts"]:
                assert alert["exp_labels"]["severity"] == severity, name
                assert alert["exp_annotations"]["runbook"] == annotations["runbook"], name


def test_alertmanager_mutes_a_versions_tickets_while_its_page_fires() -> None:
    config = yaml.safe_load(
        (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8")
    )
    (inhibit,) = [
        rule
        for rule in config["inhibit_rules"]
        if rule["source_matchers"] == ['alertname="ModelQualityDegraded"']
    ]
    (target,) = inhibit["target_matchers"]
    alternatives = re.fullmatch(r'alertname=~"([^"]+)"', target)
    assert alternatives
    tickets = {n for n, r in ALERTS.items() if r["labels"]["severity"] == "ticket"}
    assert set(alternatives.group(1).split("|")) == tickets
    assert inhibit["equal"] == ["model_name", "model_version"]
    # The page is one per version: it carries exactly the labels the inhibition compares.
    assert "and on (model_name, model_version)" in ALERTS["ModelQualityDegraded"]["expr"]
    # And an SLO's page does not reach the model-quality tickets (they have no slo label).
    slo = config["inhibit_rules"][0]
    assert slo["equal"] == ["slo"] and 'slo=~".+"' in slo["source_matchers"]
    assert all("slo" not in rule["labels"] for rule in ALERTS.values())


def _fewest_images(buckets: int, reference_images: int) -> int | None:
    """The fewest live images with psi_noise under the drift threshold (None: none)."""
    if quality.psi_noise(buckets, 10**9, reference_images) >= quality.DRIFT_PSI:
        return None
    n = 1
    while quality.psi_noise(buckets, n, reference_images) >= quality.DRIFT_PSI:
        n += 1
    return n


@pytest.mark.parametrize(("buckets", "reference_images"), sorted(NOISE_FLOOR_TABLE))
def test_the_noise_floor_numbers_in_operations_are_the_formulas(
    buckets: int, reference_images: int
) -> None:
    fewest = _fewest_images(buckets, reference_images)
    assert fewest == NOISE_FLOOR_TABLE[buckets, reference_images]
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    shown = f"{fewest:,}" if fewest is not None else "never"
    assert f"| {buckets} | {reference_images:,} | {shown} |" in operations


def test_the_rules_noise_floor_is_the_servers() -> None:
    """The rule's expression, read as arithmetic, against `quality.psi_noise`."""
    expr = RECORDS["model_version_signal:model_quality_psi_noise:1h"]
    python = (
        expr.replace("model_version_signal:model_quality_buckets:count", "B")
        .replace("model_version_signal:model_quality_observations:increase1h", "n")
        .replace("model_version:model_quality_reference_images:max", "m")
        .replace("on (model_name, model_version) group_left ()", "")
        .replace("clamp_min", "max")
        .replace("sqrt", "math.sqrt")
    )
    for buckets, n, m in ((3, 300, 400), (10, 141, 400), (32, 5000, 250), (2, 1, 1)):
        value = eval(f"({python})", {"math": math, "max": max}, {"B": buckets, "n": n, "m": m})  # noqa: S307
        assert value == pytest.approx(quality.psi_noise(buckets, n, m), rel=1e-12)


def test_the_dashboard_row_draws_the_recorded_series_and_the_thresholds() -> None:
    model = json.loads(
        (ROOT / "deploy/grafana/dashboards/inference-gateway.json").read_text(encoding="utf-8")
    )
    panels = model["panels"]
    start = next(
        i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Model quality"
    )
    end = next(i for i, p in enumerate(panels) if i > start and p["type"] == "row")
    row = panels[start + 1 : end]
    exprs = [t["expr"] for p in row for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"([a-z_]+:[a-z_]+:[a-z0-9]+)", e)}
    assert names and names <= set(RECORDS)
    assert "model_version_signal:model_quality_psi:1h" in names
    psi = next(p for p in row if "PSI per signal" in p["title"])
    assert {t["expr"] for t in psi["targets"]} >= {"vector(0.1)", "vector(0.25)"}
    distribution = next(p for p in row if p["type"] == "barchart")
    assert all(t["instant"] and t["format"] == "table" for t in distribution["targets"])
    assert all('signal="$signal"' in t["expr"] for t in distribution["targets"])
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert {"model_name", "model_version", "signal"} <= set(variables)
    assert variables["signal"]["current"]["value"] in quality.SIGNALS
