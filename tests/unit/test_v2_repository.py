"""The model repository and statistics extensions of the Open Inference Protocol, over REST.

A gateway serves a repository of two real ONNX models and polls it; load, unload and
index change and show what it serves, only with ``ADMIN_TOKEN``; the statistics come
from the counters behind ``/metrics``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from tests.helpers import json_log_capture, make_settings, ready_client, wait_until
from tests.images import CAT_PNG
from tests.model_repository import (
    BUILTIN_YAML,
    TENCH,
    builtin_onnx,
    write_lite_and_tench,
    write_yaml_model,
)
from tests.servers import free_port

TOKEN = "s3cret-admin-token-0123456789"  # noqa: S105 - a test server\'s token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_lite_and_tench(root)
    return root


@pytest.fixture(scope="module")
def logs() -> Iterator[Any]:
    with json_log_capture() as stream:
        yield stream


@pytest.fixture(scope="module")
def client(repository: Path, logs: Any) -> Iterator[TestClient]:
    settings = make_settings(
        model_repository=repository,
        model_repository_poll_seconds=0.2,
        admin_token=TOKEN,
        default_model="lite",
    )
    with TestClient(create_app(settings, configure_logging=False)) as client:
        yield ready_client(client)


def _index(client: TestClient, body: bytes = b"") -> list[dict[str, str]]:
    answer = client.post("/v2/repository/index", content=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, str]] = answer.json()
    return entries


def _state(client: TestClient, name: str) -> tuple[str, str]:
    (entry,) = [e for e in _index(client) if e["name"] == name]
    return entry["state"], entry["reason"]


def _top1(client: TestClient, model: str) -> int:
    answer = client.post(f"/models/{model}/predict", content=CAT_PNG.read_bytes(), headers=PNG)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["predictions"][0]["class_id"])


def test_the_index_lists_every_model_with_its_state(client: TestClient) -> None:
    assert _index(client) == [
        {"name": "lite", "version": "1", "state": "READY", "reason": ""},
        {"name": "tench", "version": "1", "state": "READY", "reason": ""},
    ]
    assert [e["name"] for e in _index(client, b'{"ready": true}')] == ["lite", "tench"]
    extensions = client.get("/v2").json()["extensions"]
    assert "model_repository" in extensions and "statistics" in extensions


def test_unload_takes_a_model_out_until_it_is_loaded_again_whatever_the_polls_find(
    client: TestClient,
) -> None:
    assert _top1(client, "tench") == TENCH
    answer = client.post("/v2/repository/models/tench/unload", headers=AUTH)
    assert answer.status_code == 200 and answer.json() == {}
    assert _state(client, "tench") == ("UNAVAILABLE", "unloaded")
    assert client.post("/models/tench/predict", content=b"x", headers=PNG).status_code == 404
    assert client.get("/v2/models/tench/ready").status_code == 404
    assert client.get("/ready").status_code == 200  # an unloaded model does not gate readiness
    assert [e["name"] for e in _index(client, b'{"ready": true}')] == ["lite"]
    polls = time.monotonic() + 1.0  # five polls of the repository, which still holds it
    wait_until(lambda: time.monotonic() > polls, what="a few polls")
    assert _state(client, "tench") == ("UNAVAILABLE", "unloaded")
    assert client.get("/v2/models").json() == {"models": ["lite"]}

    answer = client.post("/v2/repository/models/tench/load", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert _state(client, "tench") == ("READY", "")  # load answers once the model serves
    assert _top1(client, "tench") == TENCH
    assert client.get("/ready").status_code == 200


def test_load_picks_up_a_model_added_since_the_last_poll(
    client: TestClient, repository: Path
) -> None:
    staging = repository / ".staging"  # published at once, as a deployment tool would
    write_yaml_model(staging, "added", {3: builtin_onnx()}, BUILTIN_YAML)
    (staging / "added").rename(repository / "added")
    answer = client.post("/v2/repository/models/added/load", content=b"{}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert client.get("/v2/models/added/versions/3/ready").json() == {
        "name": "added",
        "ready": True,
    }


def test_load_refuses_what_the_repository_does_not_hold(
    client: TestClient, repository: Path
) -> None:
    unknown = client.post("/v2/repository/models/nope/load", headers=AUTH)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    config = json.dumps({"parameters": {"config": '{"backend": "python"}'}})
    inline = client.post("/v2/repository/models/lite/load", content=config, headers=AUTH)
    assert inline.status_code == 400 and "repository directory" in inline.json()["error"]
    files = json.dumps({"parameters": {"file:1/model.onnx": "AAAA"}})
    assert (
        client.post("/v2/repository/models/lite/load", content=files, headers=AUTH).status_code
        == 400
    )
    traversal = client.post("/v2/repository/models/..%2F..%2Fetc/load", headers=AUTH)
    assert traversal.status_code == 404
    assert client.post("/v2/repository/index", content=b"[1]", headers=AUTH).status_code == 400
    assert (
        client.post("/v2/repository/index", content=b'{"ready": 1}', headers=AUTH).status_code
        == 400
    )


def test_a_model_whose_files_are_broken_fails_to_load_with_the_reason(
    client: TestClient, repository: Path
) -> None:
    staging = repository / ".staging-broken"
    write_yaml_model(staging, "broken", {1: builtin_onnx()}, BUILTIN_YAML)
    (staging / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    (staging / "broken").rename(repository / "broken")
    answer = client.post("/v2/repository/models/broken/load", headers=AUTH)
    assert answer.status_code == 400
    assert "broken" in answer.json()["error"] and "version 1" in answer.json()["error"]
    # The reason names the file inside the repository, never the server's own path.
    shown = [
        answer.json()["error"],
        client.get("/models/broken").text,
        client.get("/ready").text,
        client.post("/models/broken/predict", content=b"x", headers=PNG).text,
    ]
    assert any("broken/1/model.onnx" in text for text in shown)
    assert all(str(repository) not in text for text in shown), shown
    client.post("/v2/repository/models/broken/unload", headers=AUTH)


def test_with_no_model_served_the_gateway_is_not_ready_and_predict_says_so(
    tmp_path: Path,
) -> None:
    write_yaml_model(tmp_path, "lite", {1: builtin_onnx()}, BUILTIN_YAML)
    port = free_port()
    settings = make_settings(model_repository=tmp_path, admin_token=TOKEN, grpc_port=port)
    with TestClient(create_app(settings, configure_logging=False)) as client:
        ready_client(client)
        server = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            assert server.is_server_ready()
            answer = client.post("/v2/repository/models/lite/unload", headers=AUTH)
            assert answer.status_code == 200, answer.text
            ready = client.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["detail"].startswith("No model is served")
            v2_ready = client.get("/v2/health/ready")
            assert v2_ready.status_code == 503
            assert v2_ready.json()["error"].startswith("No model is served")
            assert not server.is_server_ready()
            refused = client.post("/predict", content=CAT_PNG.read_bytes(), headers=PNG)
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["reason"] == "not_ready"
            assert refused.json()["detail"].startswith("No model is served")

            answer = client.post("/v2/repository/models/lite/load", headers=AUTH)
            assert answer.status_code == 200, answer.text
            assert client.get("/ready").status_code == 200 and server.is_server_ready()
        finally:
            server.close()


def test_an_empty_repository_is_not_ready(tmp_path: Path) -> None:
    settings = make_settings(model_repository=tmp_path)
    with TestClient(create_app(settings, configure_logging=False)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["detail"].startswith("No model is served")
        refused = client.post("/predict", content=CAT_PNG.read_bytes(), headers=PNG)
        assert refused.status_code == 503 and refused.json()["reason"] == "not_ready"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["none", "wrong", "basic", "empty", "longer"],
)
def test_without_the_token_nothing_changes(
    client: TestClient, headers: dict[str, str], logs: Any
) -> None:
    for path in (
        "/v2/repository/index",
        "/v2/repository/models/lite/unload",
        "/v2/repository/models/lite/load",
    ):
        answer = client.post(path, headers=headers)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "ADMIN_TOKEN" in answer.json()["error"]
    assert _state(client, "lite") == ("READY", "")
    assert TOKEN not in logs.getvalue()


def test_the_extension_is_off_without_an_admin_token(real_app_client: TestClient) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/efficientnet-lite0/unload"):
        answer = real_app_client.post(path, headers=AUTH)
        assert answer.status_code == 403
        assert "ADMIN_TOKEN" in answer.json()["error"]
    assert "model_repository" not in real_app_client.get("/v2").json()["extensions"]
    assert real_app_client.get("/v2/health/ready").status_code == 200


def test_statistics_come_from_the_counters(client: TestClient) -> None:
    before = client.get("/v2/models/lite/stats").json()["model_stats"][0]
    for _ in range(3):
        _top1(client, "lite")
    body = client.get("/v2/models/lite/versions/1/stats").json()
    (stats,) = body["model_stats"]
    assert (stats["name"], stats["version"]) == ("lite", "1")
    assert stats["inference_count"] == before["inference_count"] + 3
    assert stats["execution_count"] >= before["execution_count"] + 1
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == stats["inference_count"]
    assert infer["queue"]["count"] >= 3 and infer["compute_infer"]["ns"] > 0
    assert infer["fail"]["count"] == 0
    everything = client.get("/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} >= {("lite", "1"), ("tench", "1")}
    assert client.get("/v2/models/nope/stats").status_code == 404
    assert client.get("/v2/models/lite/versions/7/stats").status_code == 404
    metrics = client.get("/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("inference_batch_size_count{")
        and 'model_name="lite"' in line
        and 'model_version="1"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == stats["execution_count"]


def test_statistics_need_the_metrics() -> None:
    app = create_app(make_settings(enable_metrics=False), configure_logging=False)
    with TestClient(app) as client:
        ready_client(client)
        answer = client.get("/v2/models/stats")
        assert answer.status_code == 403 and "ENABLE_METRICS" in answer.json()["error"]
        assert "statistics" not in client.get("/v2").json()["extensions"]
