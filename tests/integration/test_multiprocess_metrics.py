"""Two worker processes, one scrape: the totals of both."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.model_repository import (
    BUILTIN_YAML,
    TENCH,
    builtin_onnx,
    shifted_variant,
    write_yaml_model,
)
from tests.scrape import Samples, parse, total, value
from tests.servers import free_port, gateway_process

pytestmark = pytest.mark.integration

REQUESTS = 24
#: More requests are sent, up to this many, until both workers have answered some:
#: which worker accepts a fresh connection is the kernel's choice.
MAX_REQUESTS = 200


def _predicting_pids(lines: list[str]) -> set[int]:
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return {r["pid"] for r in records if r.get("endpoint") == "/predict"}


def _resident_bytes(pid: int) -> int:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("where", ["same-port", "metrics-port"])
def test_one_scrape_reports_the_sum_of_two_workers(tmp_path: Path, where: str) -> None:
    metrics_dir = tmp_path / "metrics"
    # Head sampling: the forward pass's histogram carries exemplars too (under tail
    # sampling only the requests' do; tests/unit/test_metrics.py).
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    metrics_port = free_port()
    if where == "metrics-port":
        env["METRICS_PORT"] = str(metrics_port)
    with gateway_process(env, args=("--workers", "2")) as gateway:
        wait_until(
            lambda: sum('"Model ready"' in line for line in gateway.log_lines()) >= 2,
            timeout=120,
            what="both workers to load the model",
        )
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            # Fresh connections spread requests over both workers' accept loops.
            sent = 0
            while sent < REQUESTS or (
                len(_predicting_pids(gateway.log_lines())) < 2 and sent < MAX_REQUESTS
            ):
                sent += 1
                response = httpx.post(
                    f"{gateway.url}/predict",
                    content=cat_jpeg(),
                    headers={"content-type": "image/jpeg"},
                    timeout=30,
                )
                assert response.status_code == 200
            for _ in range(3):
                assert client.get("/missing").status_code == 404
            if where == "metrics-port":
                # The parent process serves the workers' sum on its own port.
                scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            else:
                scraped = client.get("/metrics")
            assert scraped.status_code == 200
            samples = parse(scraped.text)
            # Each worker's resident memory right after the scrape, read from /proc.
            rss = {pid: _resident_bytes(pid) for pid in _predicting_pids(gateway.log_lines())}
            if where == "metrics-port":
                assert client.get("/metrics").status_code == 404  # not on the public port
            else:
                # The worker that answers the scrape adds its own exemplars to the sums.
                open_metrics = client.get(
                    "/metrics", headers={"accept": "application/openmetrics-text"}
                ).text
                for histogram in (
                    "http_request_duration_seconds",
                    "model_inference_duration_seconds",
                ):
                    assert re.search(
                        histogram + r'_bucket\{[^}]*\} \d+\.0 # \{trace_id="[0-9a-f]{32}"\}',
                        open_metrics,
                    ), histogram
                # The statistics extension reads the same sums, whichever worker answers.
                stats = client.get("/v2/models/efficientnet-lite0/stats").json()
                assert stats["model_stats"][0]["inference_count"] == sent
        # Both workers served predictions, and each kept its own files.
        assert len(_predicting_pids(gateway.log_lines())) == 2
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2
        assert (
            value(samples, "http_requests_total", method="POST", endpoint="/predict", status="200")
            == sent
        )
        assert (
            value(
                samples, "http_request_duration_seconds_count", method="POST", endpoint="/predict"
            )
            == sent
        )
        assert (
            value(samples, "http_requests_total", method="GET", endpoint="unmatched", status="404")
            == 3
        )
        assert total(samples, "model_predictions_total") == sent
        assert (
            value(samples, "model_loaded", model_name="efficientnet-lite0", model_version="1") == 1
        )  # livemin: both ready
        # process_* describe each worker (label pid), not only the one that answered.
        assert len(rss) == 2
        for pid, resident in rss.items():
            scraped = value(samples, "process_resident_memory_bytes", pid=str(pid))
            assert 0.8 * resident < scraped < 1.2 * resident
            assert value(samples, "process_cpu_seconds_total", pid=str(pid)) > 0
            assert value(samples, "process_open_fds", pid=str(pid)) > 0
        assert {labels for name, labels in samples if name == "process_open_fds"} == {
            frozenset({("pid", str(pid))}) for pid in rss
        }
        assert gateway.stop() == 0


def test_ready_waits_for_every_worker(tmp_path: Path) -> None:
    """With two workers, /ready is 200 only once both have loaded their model: a load
    balancer must not route to a server one of whose workers would answer 503."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold_load").touch()  # the second worker to start waits (tests/gated_app.py)
    env = {"GATE_DIR": str(gate), "LOG_LEVEL": "INFO"}
    args = ("--workers", "2", "--app", "tests.gated_app:app")
    with gateway_process(env, args=args, wait_for="/health") as gateway:
        wait_until(
            lambda: sum('"Model ready"' in line for line in gateway.log_lines()) == 1,
            timeout=60,
            what="the first worker to load",
        )
        # Fresh connections reach either worker; none may say ready yet.
        answers = [httpx.get(f"{gateway.url}/ready", timeout=10) for _ in range(30)]
        assert {r.status_code for r in answers} == {503}
        assert any(r.json()["detail"] == "1 of 2 workers are ready." for r in answers)
        (gate / "hold_load").unlink()
        wait_until(
            lambda: httpx.get(f"{gateway.url}/ready", timeout=10).status_code == 200,
            timeout=60,
            what="both workers ready",
        )
        answers = [httpx.get(f"{gateway.url}/ready", timeout=10) for _ in range(30)]
        assert {r.status_code for r in answers} == {200}
        assert gateway.stop() == 0


def _model_series(samples: Samples, version: str) -> Samples:
    """The samples of version ``version`` of the model ``m``."""
    return {
        key: number
        for key, number in samples.items()
        if ("model_name", "m") in key[1] and ("model_version", version) in key[1]
    }


def _counting(samples: Samples) -> Samples:
    """The counter and histogram samples: values that must never go down."""
    return {
        key: number
        for key, number in samples.items()
        if key[0].endswith(("_total", "_count", "_sum", "_bucket"))
    }


@pytest.mark.parametrize("where", ["same-port", "metrics-port"])
def test_a_removed_version_leaves_the_scrape_of_every_worker(tmp_path: Path, where: str) -> None:
    """With two workers, a version removed from the repository loses all its series,
    whichever process answers the scrape, as it does with one worker; the version that
    still serves keeps its counts (none goes down, which ``rate()`` would read as a
    reset) and goes on counting."""
    root = tmp_path / "models"
    builtin = builtin_onnx()
    write_yaml_model(
        root,
        "m",
        {1: builtin, 2: shifted_variant(builtin, TENCH, 50.0)},
        {**BUILTIN_YAML, "versions": {"all": True}},
    )
    env = {
        "MODEL_REPOSITORY": str(root),
        "MODEL_REPOSITORY_POLL_SECONDS": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    metrics_port = free_port()
    if where == "metrics-port":
        env["METRICS_PORT"] = str(metrics_port)
    metrics_url = (
        f"http://127.0.0.1:{metrics_port}/metrics" if where == "metrics-port" else "/metrics"
    )
    with gateway_process(env, args=("--workers", "2")) as gateway:

        def scrape() -> Samples:
            # A fresh connection each time: either worker may answer.
            response = httpx.get(httpx.URL(gateway.url).join(metrics_url), timeout=10)
            assert response.status_code == 200
            return parse(response.text)

        def predict(version: str) -> None:
            response = httpx.post(
                f"{gateway.url}/models/m/versions/{version}/predict",
                content=cat_jpeg(),
                headers={"content-type": "image/jpeg"},
                timeout=30,
            )
            assert response.status_code == 200

        for _ in range(6):
            predict("1")
            predict("2")
        before = scrape()
        assert value(before, "prediction_confidence_count", model_name="m", model_version="2") == 6
        assert _model_series(before, "2")
        kept = _counting(_model_series(before, "1"))
        assert value(before, "prediction_confidence_count", model_name="m", model_version="1") == 6

        doomed = root / "m" / ".removed-2"
        (root / "m" / "2").rename(doomed)
        shutil.rmtree(doomed)
        wait_until(
            lambda: sum('"Model removed"' in line for line in gateway.log_lines()) == 2,
            timeout=60,
            what="both workers to remove version 2",
        )
        wait_until(
            lambda: not _model_series(scrape(), "2"),
            timeout=60,
            what="version 2's series to leave /metrics",
        )
        predict("1")
        # Every scrape agrees, whichever worker answers it.
        for _ in range(10):
            after = scrape()
            assert not _model_series(after, "2")
            assert value(after, "model_loaded", model_name="m", model_version="1") == 1
            assert (
                value(after, "prediction_confidence_count", model_name="m", model_version="1") == 7
            )
            for key, number in kept.items():
                assert after.get(key, 0.0) >= number, key
        assert gateway.stop() == 0
