"""The model repository and statistics extensions with the real Triton clients.

A real ``inference-gateway serve`` polls a repository of two real ONNX models, with
``ADMIN_TOKEN`` and ``GRPC_PORT``. `tritonclient.http` and `tritonclient.grpc`, unchanged,
list, unload and load models with the token, are refused without it, and read the
statistics. (KServe's ``InferenceRESTClient`` has no repository or statistics calls.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.images import CAT_PNG
from tests.model_repository import (
    TENCH,
    write_lite_and_tench,
)
from tests.oip import classes, grpc_images, refusal
from tests.servers import GatewayProcess, gateway_process

TOKEN = "repository-admin-token-42"  # noqa: S105 - a test server\'s token
BEARER = {"Authorization": f"Bearer {TOKEN}"}
GRPC_BEARER = {"authorization": f"Bearer {TOKEN}"}  # gRPC metadata keys are lower case
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_lite_and_tench(root)
    return root


@pytest.fixture(scope="module")
def gateway(repository: Path, grpc_port: int) -> Iterator[GatewayProcess]:
    env = {
        "MODEL_REPOSITORY": str(repository),
        "MODEL_REPOSITORY_POLL_SECONDS": "0.5",
        "ADMIN_TOKEN": TOKEN,
        "GRPC_PORT": str(grpc_port),
        "WORKERS": "1",
    }
    with gateway_process(env) as process:
        yield process


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(gateway: GatewayProcess, grpc_port: int) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    yield client
    client.close()


def _top1_http(client: httpclient.InferenceServerClient, model: str) -> int:
    images = httpclient.InferInput("input", [1], "BYTES")
    images.set_data_from_numpy(np.array([CAT_PNG.read_bytes()], dtype=np.object_))
    output = httpclient.InferRequestedOutput("logits", class_count=1)
    ((best,),) = classes(client.infer(model, [images], outputs=[output]))
    return best[1]


def test_http_client_unloads_and_loads_with_the_token(
    http: httpclient.InferenceServerClient,
) -> None:
    index = http.get_model_repository_index(headers=BEARER)
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("lite", "1", "READY"),
        ("tench", "1", "READY"),
    ]
    assert _top1_http(http, "tench") == TENCH
    http.unload_model("tench", headers=BEARER, unload_dependents=True)
    assert not http.is_model_ready("tench")
    gone = refusal(lambda: _top1_http(http, "tench"))
    assert gone.status() == "404"
    (entry,) = [m for m in http.get_model_repository_index(headers=BEARER) if m["name"] == "tench"]
    assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", "unloaded")
    assert http.is_server_ready()  # an unloaded model does not gate readiness
    http.load_model("tench", headers=BEARER)
    assert http.is_model_ready("tench") and _top1_http(http, "tench") == TENCH


def test_http_client_without_the_token_changes_nothing(
    http: httpclient.InferenceServerClient, gateway: GatewayProcess
) -> None:
    for headers in (None, {"Authorization": "Bearer not-the-token-0000"}):
        for call in (
            lambda headers=headers: http.get_model_repository_index(headers=headers),
            lambda headers=headers: http.unload_model("lite", headers=headers),
            lambda headers=headers: http.load_model("lite", headers=headers),
        ):
            refused = refusal(call)
            assert refused.status() == "401" and "ADMIN_TOKEN" in refused.message()
    assert http.is_model_ready("lite")
    inline = refusal(
        lambda: http.load_model("lite", headers=BEARER, config='{"max_batch_size": 1}')
    )
    assert inline.status() == "400" and "repository directory" in inline.message()
    assert all(TOKEN not in line for line in gateway.log_lines())


def test_grpc_client_unloads_and_loads_with_the_token(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    index = grpc.get_model_repository_index(headers=GRPC_BEARER)
    assert [(m.name, m.version, m.state) for m in index.models] == [
        ("lite", "1", "READY"),
        ("tench", "1", "READY"),
    ]
    grpc.unload_model("lite", headers=GRPC_BEARER)
    assert not grpc.is_model_ready("lite")
    refused = refusal(lambda: grpc.infer("lite", [grpc_images(CAT_PNG.read_bytes())]))
    assert refused.status() == "StatusCode.NOT_FOUND"
    ready = grpc.get_model_repository_index(headers=GRPC_BEARER)
    assert [m.name for m in ready.models if m.state == "READY"] == ["tench"]
    grpc.load_model("lite", headers=GRPC_BEARER)
    assert grpc.is_model_ready("lite")
    missing = refusal(lambda: grpc.load_model("nope", headers=GRPC_BEARER))
    assert missing.status() == "StatusCode.NOT_FOUND"


def test_grpc_client_without_the_token_changes_nothing(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    for headers in (None, {"authorization": "Bearer not-the-token-0000"}):
        for call in (
            lambda headers=headers: grpc.get_model_repository_index(headers=headers),
            lambda headers=headers: grpc.unload_model("lite", headers=headers),
            lambda headers=headers: grpc.load_model("lite", headers=headers),
        ):
            refused = refusal(call)
            assert refused.status() == "StatusCode.UNAUTHENTICATED"
    assert grpc.is_model_ready("lite")


def test_statistics_over_both_protocols(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    before = http.get_inference_statistics("lite")["model_stats"][0]["inference_count"]
    grpc.infer("lite", [grpc_images(CAT_PNG.read_bytes(), CAT_PNG.read_bytes())])
    _top1_http(http, "lite")
    (stats,) = http.get_inference_statistics("lite", "1")["model_stats"]
    assert stats["inference_count"] == before + 3
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    over_grpc = grpc.get_inference_statistics("lite")
    (model,) = over_grpc.model_stats
    assert (model.name, model.version, model.inference_count) == ("lite", "1", before + 3)
    assert model.inference_stats.queue.count >= before + 3
    everything = grpc.get_inference_statistics()
    assert {m.name for m in everything.model_stats} == {"lite", "tench"}
    assert refusal(lambda: http.get_inference_statistics("nope")).status() == "404"
