"""The container and compose files, checked offline (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from inference_gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
STANDARD_OTEL = {
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
}


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_compose_has_the_whole_stack_with_pinned_images_and_healthchecks() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"gateway", "prometheus", "alertmanager", "jaeger", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        image = service.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: image not pinned: {image!r}"
    ports = {name: [p.split(":")[0] for p in s.get("ports", [])] for name, s in services.items()}
    assert ports["gateway"] == ["8000"]
    assert ports["prometheus"] == ["9090"]
    assert set(ports["jaeger"]) == {"16686", "4318"}
    assert ports["grafana"] == ["3000"]
    assert ports["alertmanager"] == ["9093"]


def test_gateway_environment_uses_only_known_variables() -> None:
    env = COMPOSE["services"]["gateway"]["environment"]
    unknown = set(env) - SETTINGS_VARS - STANDARD_OTEL
    assert unknown == set()
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    Settings(**{k.lower(): v for k, v in env.items() if k in SETTINGS_VARS}, _env_file=None)  # type: ignore[arg-type]


def test_mounted_paths_exist() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"{name}: {source}"
    assert (DEPLOY / COMPOSE["services"]["gateway"]["build"]["context"] / "pyproject.toml").exists()


def test_prometheus_runs_with_exemplar_storage_and_the_project_rules() -> None:
    command = COMPOSE["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_dockerfile_is_multi_stage_slim_non_root_with_the_model_baked_in() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2
    # Every stage on the one base, the official slim Python 3.11 unless overridden.
    assert set(stages) == {"${BASE_IMAGE}"}
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)
    assert "torch==2.13.0" in DOCKERFILE and "whl/cpu" in DOCKERFILE
    assert "torchvision" not in DOCKERFILE
    assert "inference-gateway export-onnx" in DOCKERFILE
    # The server loads the built-in model from its repository form: baked in too.
    assert "export-onnx --repository /opt/models/repository" in DOCKERFILE
    assert re.search(r"^USER gateway$", DOCKERFILE, re.M)
    assert re.search(r"^HEALTHCHECK .*", DOCKERFILE, re.M) and "/health" in DOCKERFILE
    assert re.search(r"^STOPSIGNAL SIGTERM$", DOCKERFILE, re.M)


def test_stop_grace_period_outlasts_the_drain() -> None:
    drain = int(re.search(r"GRACEFUL_SHUTDOWN_SECONDS=(\d+)", DOCKERFILE).group(1))  # type: ignore[union-attr]
    gateway = COMPOSE["services"]["gateway"]
    assert int(gateway["environment"]["GRACEFUL_SHUTDOWN_SECONDS"]) == drain
    assert _seconds(gateway["stop_grace_period"]) > drain


def test_dashboard_json_is_generated_from_its_script_and_links_exemplars() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_dashboard", ROOT / "scripts" / "build_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    committed = (DEPLOY / "grafana" / "dashboards" / "inference-gateway.json").read_text()
    assert committed == module.render(), "run scripts/build_dashboard.py"
    model = json.loads(committed)
    latency = next(p for p in model["panels"] if p["title"].startswith("/predict latency"))
    assert all(t["exemplar"] for t in latency["targets"])
    titles = " ".join(p["title"] for p in model["panels"])
    for topic in (
        "Requests/s",
        "Error",
        "latency",
        "queue",
        "batch",
        "time goes",
        "classes",
        "confidence",
        "Availability",
        "budget",
        "burn",
        "PSI",
        "noise floor",
        "reference",
    ):
        assert topic.lower() in titles.lower(), topic
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    )
    prometheus = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"][0] == {
        "name": "trace_id",
        "datasourceUid": "jaeger",
    }


def test_every_alert_has_a_runbook_in_operations() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^### (.+)$", operations, re.M)
    }
    alerts = [
        rule
        for path in sorted((DEPLOY / "prometheus/rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert {"SLOErrorBudgetFastBurn", "ModelInputDrift"} <= {rule["alert"] for rule in alerts}
    for rule in alerts:
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/operations.md#"), rule["alert"]
        assert runbook.split("#", 1)[1] in anchors, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]


def test_alertmanager_routes_pages_and_tickets() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert receivers == {"pages", "tickets"}
    assert config["route"]["routes"][0]["receiver"] == "pages"
    assert config["inhibit_rules"][0]["equal"] == ["slo"]
    # Only an SLO's page mutes tickets by slo: a label both alerts lack counts as equal.
    assert 'slo=~".+"' in config["inhibit_rules"][0]["source_matchers"]
