"""The monitoring stack as tested code: promtool, and a real Prometheus scraping a real gateway.

Prometheus and promtool come from Debian's `prometheus` package; `make test` installs
it when missing (scripts/ensure_tools.sh). These tests fail, not skip, without it: CI
must run them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from inference_gateway.cli import main as cli_main
from inference_gateway.config import Settings
from inference_gateway.inference.onnx_export import export_to_repository
from inference_gateway.inference.quality import load_reference, psi, psi_noise
from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.model_repository import NHWC_IMAGENET, write_yaml_model
from tests.photo_variants import variants, write_set
from tests.scrape import parse
from tests.servers import GatewayProcess, free_port, gateway_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "inference-gateway.json"
SPEC_QUERIES = [
    '(sum(rate(http_requests_total{status!~"5.."}[30d])) / sum(rate(http_requests_total[30d]))) * 100',
    'histogram_quantile(0.99, rate(http_request_duration_seconds_bucket{endpoint="/predict"}[7d]))',
    '1 - ((sum(rate(http_requests_total{status=~"5.."}[30d])) / sum(rate(http_requests_total[30d]))) / 0.005)',
]
PREDICTIONS = 12
OTHER_PREDICTIONS = 4
GRPC_PREDICTIONS = 3
OTHER_MODEL = "channels-last"
BAD_IMAGES = 3
DEFAULT_MODEL = "efficientnet-lite0"
#: The built-in model's reference profile: enough images for every signal's buckets.
REFERENCE_IMAGES = 40
#: The value Grafana's variables take in the checks: every model and version, and one
#: signal for the distribution panel.
DASHBOARD_VARIABLES = {"$model_name": ".*", "$model_version": ".*", "$signal": "class"}
#: Scrapes that must hold the traffic before the queries over it are checked.
SCRAPES_OF_TRAFFIC = 3


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run scripts/ensure_tools.sh prometheus"
    return path


def test_promtool_checks_the_config_and_rules() -> None:
    promtool = _tool("promtool")
    subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")], check=True
    )
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    subprocess.run([promtool, "check", "rules", *rules], check=True)


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    promtool = _tool("promtool")
    # Every file at once (each promtool mostly uses one core): a third less wall time.
    running = {
        test_file.name: subprocess.Popen(
            [promtool, "test", "rules", test_file.name],
            cwd=test_file.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for test_file in sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    }
    assert running
    for name, process in running.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}:\n{output}"


def _dashboard_queries() -> list[str]:
    model = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", [])]
    # As Grafana sends them with "All" models and versions picked.
    queries = []
    for expr in exprs:
        query = expr.replace("$__rate_interval", "1m")
        for variable, value in DASHBOARD_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"a variable the check does not know: {expr}"
        queries.append(query)
    return queries


def _recorded_names() -> list[str]:
    names = []
    for path in (PROMETHEUS_DIR / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [r["record"] for r in group["rules"] if "record" in r]
    return names


class Prometheus:
    """A Prometheus process on loopback with the project's config and rules."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def at(self, expr: str, when: float) -> list[dict[str, Any]]:
        """``expr`` evaluated at the instant ``when`` (a Unix time)."""
        response = httpx.get(
            f"{self.url}/api/v1/query", params={"query": expr, "time": when}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def grpc_port() -> int:
    """Where the gateway serves the Open Inference Protocol's gRPC service."""
    return free_port()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-model repository: the built-in model (the default), with a reference profile
    so that its model-quality series and rules have data, and another that takes
    channels-last ImageNet-normalised input and has none."""
    root = tmp_path_factory.mktemp("models")
    export_to_repository(root, Settings(_env_file=None).model_cache_dir)
    write_yaml_model(root, OTHER_MODEL, {1: NHWC_IMAGENET.build()}, NHWC_IMAGENET.model_yaml())
    images = tmp_path_factory.mktemp("reference")
    write_set(images, variants(REFERENCE_IMAGES, seed=1), seed=11)
    profile = ["profile", DEFAULT_MODEL, "--images", str(images), "--repository", str(root)]
    assert cli_main(profile) == 0
    return root


@pytest.fixture(scope="module")
def gateway(repository: Path, grpc_port: int) -> Iterator[GatewayProcess]:
    """A gateway serving the repository."""
    env = {
        "ENABLE_TRACING": "true",
        "MODEL_REPOSITORY": str(repository),
        "DEFAULT_MODEL": DEFAULT_MODEL,
        "GRPC_PORT": str(grpc_port),
    }
    with gateway_process(env) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(gateway: GatewayProcess) -> Iterator[Prometheus]:
    binary = _tool("prometheus")
    port = free_port()
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    config.pop("alerting")  # no Alertmanager here
    gateway_address = gateway.url.removeprefix("http://")
    for job in config["scrape_configs"]:
        target = gateway_address if job["job_name"] == "inference-gateway" else f"127.0.0.1:{port}"
        job["static_configs"] = [{"targets": [target]}]
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        log = (Path(tmp) / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _ok(f"{url}/-/ready"), timeout=60, what="Prometheus to be ready")
            yield Prometheus(url)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess, prometheus: Prometheus, grpc_port: int) -> dict[str, int]:
    """Real predictions and errors, then wait until Prometheus has seen all of them."""
    # Scraped before the traffic, so rates see the counters rise from their start.
    wait_until(
        lambda: bool(prometheus.query('up{job="inference-gateway"} == 1')),
        timeout=60,
        what="a first scrape",
    )
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for _ in range(PREDICTIONS):
            assert (
                client.post(
                    "/predict", files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")}
                ).status_code
                == 200
            )
        for _ in range(BAD_IMAGES):
            assert (
                client.post(
                    "/predict", content=b"not an image", headers={"content-type": "image/jpeg"}
                ).status_code
                == 400
            )
        grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        for _ in range(GRPC_PREDICTIONS):  # the SLOs count gRPC ModelInfer too
            image = triton_grpc.InferInput("input", [1], "BYTES")
            image.set_data_from_numpy(np.array([cat_jpeg()], dtype=np.object_))
            grpc.infer(DEFAULT_MODEL, [image])
        grpc.close()
        for _ in range(OTHER_PREDICTIONS):
            answer = client.post(
                f"/models/{OTHER_MODEL}/predict",
                content=cat_jpeg(),
                headers={"content-type": "image/jpeg"},
            )
            assert answer.status_code == 200
        # A deadline shorter than any prediction: a server-side 5xx for the SLIs.
        late = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={"content-type": "image/jpeg", "x-request-timeout-ms": "1"},
        )
        assert late.status_code in (503, 504)
        assert client.get("/nowhere").status_code == 404

    def seen() -> bool:
        """Every request of the traffic is scraped, the last ones included."""
        counts = {
            'http_requests_total{endpoint="/predict",status="200"}': PREDICTIONS,
            'http_requests_total{endpoint="/predict",status=~"5.."}': 1,
            'http_requests_total{endpoint="unmatched",status="404"}': 1,
        }
        for selector, expected in counts.items():
            result = prometheus.query(f"sum({selector})")
            if not result or float(result[0]["value"][1]) != expected:
                return False
        return True

    wait_until(seen, timeout=60, what="Prometheus to scrape all the traffic")
    wait_until(
        lambda: _settled(prometheus), timeout=60, what="scrapes and rule evaluations of the traffic"
    )
    return {
        "ok": PREDICTIONS,
        "bad": BAD_IMAGES,
        "other": OTHER_PREDICTIONS,
        "grpc": GRPC_PREDICTIONS,
    }


def _settled(prometheus: Prometheus) -> bool:
    """Rate windows hold several scrapes of the traffic, and every rule group has been
    evaluated since the latest of them.

    The per-class prediction series appear with the traffic, so their sample counts
    are the scrapes since it.
    """
    scrapes = prometheus.query("count_over_time(model_predictions_total[10m])")
    if not scrapes or min(float(r["value"][1]) for r in scrapes) < SCRAPES_OF_TRAFFIC:
        return False
    latest = max(
        float(r["value"][1]) for r in prometheus.query("timestamp(model_predictions_total)")
    )
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return bool(groups) and all(
        datetime.fromisoformat(g["lastEvaluation"]).timestamp() > latest for g in groups
    )


def test_target_is_up_and_samples_match_what_was_sent(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    assert prometheus.scalar('up{job="inference-gateway"}') == 1
    assert (
        prometheus.scalar('sum(http_requests_total{endpoint="/predict",status="200"})')
        == traffic["ok"]
    )
    assert (
        prometheus.scalar('sum(http_requests_total{endpoint="/predict",status="400"})')
        == traffic["bad"]
    )
    assert prometheus.scalar('sum(http_requests_total{endpoint="unmatched",status="404"})') == 1
    assert prometheus.scalar("sum(model_predictions_total)") == (
        traffic["ok"] + traffic["other"] + traffic["grpc"]
    )
    assert (
        prometheus.scalar('sum(grpc_requests_total{grpc_method="ModelInfer",code="OK"})')
        == traffic["grpc"]
    )
    assert (
        prometheus.scalar(f'sum(model_predictions_total{{model_name="{OTHER_MODEL}"}})')
        == traffic["other"]
    )
    assert (
        prometheus.scalar(
            'sum(http_requests_total{endpoint="/models/{name}/predict",status="200"})'
        )
        == traffic["other"]
    )
    assert (
        prometheus.scalar('sum(image_decode_failures_total{reason="unsupported_format"})')
        == traffic["bad"]
    )
    assert prometheus.scalar("min(model_loaded)") == 1
    assert prometheus.scalar("count(model_loaded)") == 2  # one series per model version


def _rate(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Prometheus' ``rate()`` of one counter series over ``[start, end]`` (seconds), as
    its ``extrapolatedRate`` computes it: the increase between the first and last
    samples (resets added), extrapolated towards the window's edges, per second."""
    if len(samples) < 2:
        return None
    increase = samples[-1][1] - samples[0][1]
    increase += sum(before for (_, before), (_, now) in itertools.pairwise(samples) if now < before)
    sampled = samples[-1][0] - samples[0][0]
    average = sampled / (len(samples) - 1)
    to_start, to_end = samples[0][0] - start, end - samples[-1][0]
    if increase > 0 and samples[0][1] >= 0:  # a counter does not extrapolate below zero
        to_start = min(to_start, sampled * samples[0][1] / increase)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return increase * interval / sampled / (end - start)


def _rates(prometheus: Prometheus, selector: str, window: float, when_ms: int) -> list[Any]:
    """(labels, rate) of each series of ``selector`` over ``window`` seconds to the instant
    ``when_ms`` (Unix milliseconds), from the raw samples Prometheus stored. Times are
    taken relative to that instant from whole milliseconds, as Prometheus computes them:
    differences of Unix seconds as floats are off by their rounding (~0.2 µs), enough to
    move a rate past the comparison's 1e-9."""
    found = []
    for series in prometheus.at(f"{selector}[{int(window)}s]", when_ms / 1000):
        samples = [
            ((round(float(t) * 1000) - when_ms) / 1000, float(v)) for t, v in series["values"]
        ]
        rate = _rate(samples, -window, 0.0)
        if rate is not None:
            found.append((series["metric"], rate))
    return found


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over (upper bound, cumulative rate) buckets."""
    buckets = sorted(buckets)
    rank = q * buckets[-1][1]
    below, lower = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == math.inf:
                return lower
            if lower == 0.0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        below, lower = count, upper
    return math.nan


def test_the_spec_slo_queries_have_the_values_of_the_traffic(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    """Each query of the spec, evaluated at one instant, equals what its definition
    gives for the samples Prometheus holds (rates computed here from the raw samples):
    one 5xx among the requests, so availability under 100 % and the error budget (0.5 %
    of requests) overspent; the p99 of ``/predict`` within its slowest bucket."""
    availability, latency, budget = SPEC_QUERIES
    # One instant in whole milliseconds, the resolution Prometheus evaluates at: a finer
    # one would be truncated there and not here.
    when_ms = int(time.time() * 1000)
    when = when_ms / 1000
    # A scrape's samples carry the time it started, and are appended when it ends (up to
    # its 1 s timeout later): one that started before ``when`` and ended between two of
    # the queries below would give them different samples. Past two intervals, every
    # sample at or before ``when`` is stored, and all the queries see the same ones.
    time.sleep(max(0.0, when + 2.5 - time.time()))
    month, week = 30 * 86400.0, 7 * 86400.0
    requests = _rates(prometheus, "http_requests_total", month, when_ms)
    total = sum(rate for _, rate in requests)
    bad = sum(rate for labels, rate in requests if labels["status"].startswith("5"))
    assert total > 0 and bad > 0  # the one 5xx of the traffic is in the window

    (answer,) = prometheus.at(availability, when)
    assert float(answer["value"][1]) == pytest.approx(100 * (total - bad) / total, rel=1e-9)
    assert 0 < float(answer["value"][1]) < 100
    (answer,) = prometheus.at(budget, when)
    assert float(answer["value"][1]) == pytest.approx(1 - (bad / total) / 0.005, rel=1e-9)
    assert float(answer["value"][1]) < 0  # 1 in under 200 is over the 0.5 % budget

    buckets: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    selector = 'http_request_duration_seconds_bucket{endpoint="/predict"}'
    for labels, rate in _rates(prometheus, selector, week, when_ms):
        le = float(labels.pop("le"))
        labels.pop("__name__")
        buckets.setdefault(frozenset(labels.items()), []).append((le, rate))
    expected = {key: _quantile(0.99, series) for key, series in buckets.items()}
    answers = prometheus.at(latency, when)
    assert len(answers) == len(expected) >= 1
    for answer in answers:
        key = frozenset(answer["metric"].items())
        p99 = float(answer["value"][1])
        assert p99 == pytest.approx(expected[key], rel=1e-9), key
        uppers = [le for le, _ in buckets[key]]
        # Not a latency bound: histogram_quantile never answers above the highest
        # finite bucket (a rank in +Inf's bucket gets that bucket's lower edge), so this
        # holds however slow the requests were; it checks the quantile is a finite one.
        assert 0 < p99 <= max(le for le in uppers if le != math.inf), key


def test_every_recording_rule_has_data(prometheus: Prometheus, traffic: dict[str, int]) -> None:
    names = _recorded_names()
    assert len(names) >= 10
    wait_until(
        lambda: all(prometheus.query(n) for n in names), timeout=30, what="every rule to record"
    )
    assert 0 < prometheus.scalar("slo:sli_error:ratio_rate5m") < 1  # one 5xx among the requests


def test_every_dashboard_query_evaluates_and_returns_data(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 25
    empty = [q for q in queries if not prometheus.query(q)]
    assert empty == []


def test_every_dashboard_variable_has_values(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    model = json.loads(DASHBOARD.read_text())
    variables = model["templating"]["list"]
    assert {v["name"] for v in variables} >= {"model_name", "model_version", "signal"}
    for variable in variables:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert match, variable["name"]
        selector, label = match.groups()
        for name, value in DASHBOARD_VARIABLES.items():
            selector = selector.replace(name, value)
        values = {r["metric"][label] for r in prometheus.query(selector) if label in r["metric"]}
        assert values, variable["name"]
        if variable["name"] == "signal":
            assert variable["current"]["value"] in values
            assert DASHBOARD_VARIABLES["$signal"] in values


def test_the_recorded_psi_is_the_servers_of_the_same_counts(
    repository: Path, gateway: GatewayProcess, prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    """The model-quality rules on the gateway's real series: at one rule evaluation, each
    signal's recorded PSI and noise floor are `quality.psi()` and `quality.psi_noise()` of
    the bucket counts recorded in that evaluation and of the version's reference file
    (its fractions and image count, which reach the rules through the gauges)."""
    version = repository / DEFAULT_MODEL / "1"
    reference = load_reference(version, version / "model.onnx")
    assert reference is not None and reference.images == REFERENCE_IMAGES
    selector = f'{{model_name="{DEFAULT_MODEL}",model_version="1"}}'
    psi_name = "model_version_signal:model_quality_psi:1h"
    wait_until(
        lambda: len(prometheus.query(psi_name + selector)) == len(reference.fractions),
        timeout=30,
        what="a PSI for every signal",
    )
    (stamp,) = {float(r["value"][1]) for r in prometheus.query(f"timestamp({psi_name}{selector})")}

    def recorded(name: str) -> list[dict[str, Any]]:
        return prometheus.at(name + selector, stamp)

    counts: dict[str, dict[str, float]] = {}
    for series in recorded("model_version_signal_bucket:model_quality_observations:increase1h"):
        labels = series["metric"]
        counts.setdefault(labels["signal"], {})[labels["bucket"]] = float(series["value"][1])
    assert set(counts) == set(reference.fractions)
    for signal, buckets in counts.items():
        assert set(buckets) == set(reference.fractions[signal]), signal
    # Every image answered by the version, counted once in its class (the 1h increase
    # extrapolates past the last scrape by at most a scrape interval).
    images = traffic["ok"] + traffic["grpc"]
    assert images <= sum(counts["class"].values()) < 1.5 * images
    psis = {s["metric"]["signal"]: float(s["value"][1]) for s in recorded(psi_name)}
    floors = {
        s["metric"]["signal"]: float(s["value"][1])
        for s in recorded("model_version_signal:model_quality_psi_noise:1h")
    }
    assert set(psis) == set(floors) == set(counts)
    for signal, live in counts.items():
        expected = psi(live, reference.fractions[signal], reference.images)
        assert psis[signal] == pytest.approx(expected, rel=1e-9, abs=1e-12), signal
        floor = psi_noise(len(reference.fractions[signal]), sum(live.values()), reference.images)
        assert floors[signal] == pytest.approx(floor, rel=1e-9), signal
    # From the counters the gateway exports: its /metrics now (the traffic is over and
    # Prometheus has scraped it) holds what the rule read. increase() scales every
    # series' delta by the same factor (the counters started at 0 before the first
    # scrape, and the evaluation extrapolates past the last scrape alike for all), so
    # the recorded counts are the exported ones times one factor, and the rule's PSI is
    # the PSI of the exported counters so scaled.
    exported: dict[str, dict[str, float]] = {}
    for (name, labels), value in parse(httpx.get(gateway.url + "/metrics").text).items():
        fields = dict(labels)
        if name == "model_quality_observations_total" and fields["model_name"] == DEFAULT_MODEL:
            exported.setdefault(fields["signal"], {})[fields["bucket"]] = value
    assert sum(exported["class"].values()) == images
    factor = sum(counts["class"].values()) / images
    for signal, live in exported.items():
        assert counts[signal] == pytest.approx({b: v * factor for b, v in live.items()}, rel=1e-9)
        scaled = {b: v * factor for b, v in live.items()}
        expected = psi(scaled, reference.fractions[signal], reference.images)
        assert psis[signal] == pytest.approx(expected, rel=1e-9, abs=1e-12), signal
    # The other model has no reference: nothing recorded for it.
    assert not prometheus.query(f'{psi_name}{{model_name="{OTHER_MODEL}"}}')


def test_rules_load_without_error_in_the_running_server(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    groups = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
    assert {g["name"] for g in groups} == {
        "inference-gateway-sli",
        "inference-gateway-slo",
        "inference-gateway-symptoms",
        "inference-gateway-model-quality",
    }
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
            assert not rule.get("lastError"), rule


def test_exemplars_reach_prometheus_with_trace_ids(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    now = time.time()
    response = httpx.get(
        f"{prometheus.url}/api/v1/query_exemplars",
        params={
            "query": 'http_request_duration_seconds_bucket{endpoint="/predict"}',
            "start": now - 600,
            "end": now,
        },
    )
    series = response.json()["data"]
    trace_ids = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
    assert trace_ids
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids)
