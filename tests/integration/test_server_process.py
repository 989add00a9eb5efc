"""The real server process, started the way `make run` starts it."""

from __future__ import annotations

import json
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.images import CAT_CLASSES, cat_jpeg
from tests.servers import GatewayProcess, gateway_process, wait_until

pytestmark = pytest.mark.integration


def test_served_model_classifies_a_cat_upload_and_stops_cleanly() -> None:
    with gateway_process() as gateway:
        assert httpx.get(f"{gateway.url}/ready").status_code == 200
        assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
        response = httpx.post(
            f"{gateway.url}/predict",
            files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 200
        assert CAT_CLASSES & {p["class_id"] for p in response.json()["predictions"]}
        assert (
            httpx.get(f"{gateway.url}/nope").headers["content-type"] == "application/problem+json"
        )
        assert gateway.stop() == 0
    lines = [line for line in gateway.log_lines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert any(r["message"] == "Model ready" for r in records)
    # A prediction's one line is the spec's "Inference completed", with the answer on it.
    access = [r for r in records if r.get("endpoint") == "/predict" and r["level"] != "DEBUG"]
    assert [r["message"] for r in access] == ["Inference completed"]
    assert access[0]["status_code"] == 200
    assert access[0]["prediction_class"]


def test_a_server_that_hangs_at_its_stop_fails_the_test_that_started_it(tmp_path: Path) -> None:
    """The helper kills a server still running after SIGTERM, and the test fails: a hang
    at stop is reported, not hidden. Here a forward pass the test holds (a closed gate
    of tests/gated_app.py) outlasts the helper's patience within a long grace period."""
    env = {"GATE_DIR": str(tmp_path), "WORKERS": "1", "GRACEFUL_SHUTDOWN_SECONDS": "300"}
    started: list[tuple[GatewayProcess, Future[httpx.Response]]] = []
    pool = ThreadPoolExecutor(1)

    def calls() -> int:
        path = tmp_path / "calls"
        return len(path.read_text().split()) if path.exists() else 0

    def hold_a_request_and_stop() -> None:
        args = ("--app", "tests.gated_app:app")
        with gateway_process(env, args=args, stop_timeout=2) as gateway:
            warmed_up = calls()  # the start-up passes
            (tmp_path / "closed").touch()
            held = pool.submit(
                httpx.post,
                f"{gateway.url}/predict",
                content=cat_jpeg(),
                headers={"content-type": "image/jpeg"},
                timeout=120,
            )
            started.append((gateway, held))
            wait_until(lambda: calls() > warmed_up, what="a request in the model")

    with pool:
        with pytest.raises(pytest.fail.Exception, match="still running 2 s after SIGTERM"):
            hold_a_request_and_stop()
        (tmp_path / "closed").unlink()
    ((gateway, held),) = started
    assert gateway.process.returncode == -signal.SIGKILL
    with pytest.raises(httpx.TransportError):
        held.result()  # the killed server never answered
