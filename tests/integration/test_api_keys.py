"""Optional API keys, on a real ``inference-gateway serve`` over HTTP and gRPC.

Keys are made with the real ``inference-gateway keys add``; the server reads the file,
refuses requests without a valid key with 401 (problem+json, or ``{"error"}`` on
``/v2``, or UNAUTHENTICATED over gRPC), leaves probes and scrapes open, logs the key's
id and never the key, and picks up added and revoked keys without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from inference_gateway.api.keys import KeysFileError, add_key, parse_keys
from tests.images import CAT_PNG
from tests.oip import grpc_images, refusal
from tests.servers import GatewayProcess, cli_add_key, free_port, gateway_process, wait_until

pytestmark = pytest.mark.integration
MODEL = "efficientnet-lite0"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, cli_add_key(path, "alice")


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(keys_file: tuple[Path, str], grpc_port: int) -> Iterator[GatewayProcess]:
    env = {"API_KEYS_FILE": str(keys_file[0]), "GRPC_PORT": str(grpc_port), "WORKERS": "1"}
    with gateway_process(env) as process:
        yield process


def _predict(gateway: GatewayProcess, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/predict", content=CAT_PNG.read_bytes(), headers={**PNG, **headers}
    )


def test_predictions_need_a_valid_key(gateway: GatewayProcess, keys_file: tuple[Path, str]) -> None:
    _, key = keys_file
    assert _predict(gateway, {"authorization": f"Bearer {key}"}).status_code == 200
    assert _predict(gateway, {"x-api-key": key}).status_code == 200
    for headers in ({}, {"authorization": "Bearer nope"}, {"x-api-key": key + "x"},
                    {"authorization": f"Basic {key}"}):  # fmt: skip
        refused = _predict(gateway, headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["type"] == "urn:inference-gateway:problem:unauthenticated"
    # The page loads without a key (a browser sends none); it asks for one.
    assert httpx.get(f"{gateway.url}/").status_code == 200
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{gateway.url}{open_path}").status_code == 200, open_path


def test_the_access_line_names_the_key_never_the_key(
    gateway: GatewayProcess, keys_file: tuple[Path, str]
) -> None:
    _, key = keys_file
    answer = _predict(gateway, {"authorization": f"Bearer {key}"})
    request_id = answer.headers["x-request-id"]
    wait_until(lambda: request_id in "".join(gateway.log_lines()), what="the access line")
    (line,) = [json.loads(x) for x in gateway.log_lines() if x.startswith("{") and request_id in x]
    assert line["api_key_id"] == "alice"
    assert all(key not in x for x in gateway.log_lines())


def test_the_open_inference_protocol_needs_it_too(
    gateway: GatewayProcess, keys_file: tuple[Path, str], grpc_port: int
) -> None:
    _, key = keys_file
    http = httpclient.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    images = httpclient.InferInput("input", [1], "BYTES")
    images.set_data_from_numpy(np.array([CAT_PNG.read_bytes()], dtype=np.object_))
    refused = refusal(lambda: http.infer(MODEL, [images]))
    assert refused.status() == "401" and "API key" in refused.message()
    assert http.infer(MODEL, [images], headers={"Authorization": f"Bearer {key}"})
    http.close()
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    try:
        assert client.is_server_ready()  # probes stay open
        denied = refusal(lambda: client.infer(MODEL, [grpc_images(CAT_PNG.read_bytes())]))
        assert denied.status() == f"StatusCode.{grpc.StatusCode.UNAUTHENTICATED.name}"
        assert client.infer(MODEL, [grpc_images(CAT_PNG.read_bytes())], headers={"x-api-key": key})
    finally:
        client.close()


def test_keys_are_added_and_revoked_without_a_restart(
    gateway: GatewayProcess, keys_file: tuple[Path, str]
) -> None:
    path, alice = keys_file
    bob = cli_add_key(path, "bob")
    wait_until(
        lambda: _predict(gateway, {"x-api-key": bob}).status_code == 200, what="bob's key to work"
    )
    kept = [line for line in path.read_text().splitlines() if not line.startswith("alice:")]
    path.write_text("\n".join(kept) + "\n")
    wait_until(
        lambda: _predict(gateway, {"x-api-key": alice}).status_code == 401,
        what="alice's key to be refused",
    )
    assert _predict(gateway, {"x-api-key": bob}).status_code == 200


def test_the_keys_file_format(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = add_key(path, "svc-1")
    assert len(key) >= 40 and key not in path.read_text()
    with pytest.raises(KeysFileError, match="exists already"):
        add_key(path, "svc-1")
    with pytest.raises(KeysFileError, match="key id"):
        add_key(path, "no spaces")
    with pytest.raises(KeysFileError, match="line 2"):
        parse_keys("# comment\nbroken line\n")
    assert set(parse_keys(path.read_text())) == {"svc-1"}
