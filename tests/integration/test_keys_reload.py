"""API keys changed while a real ``serve --workers 2`` with gRPC runs: every worker and
both protocols pick up an added and a revoked key, and a broken edit keeps the keys in
force and says so on every worker's ``/ready``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx2 as httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inference_gateway.api.keys import add_key
from tests.servers import GatewayProcess, cli_add_key, gateway_process, wait_until

pytestmark = pytest.mark.integration
MODEL = "efficientnet-lite0"
#: Requests made on fresh connections reach each of two workers with near certainty
#: (SO_REUSEPORT spreads them); the workers' pids in the answers' logs prove it.
ROUNDS = 24


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "alice")


@pytest.fixture(scope="module")
def gateway(keys_file: tuple[Path, str], grpc_port: int) -> Iterator[GatewayProcess]:
    env = {"API_KEYS_FILE": str(keys_file[0]), "GRPC_PORT": str(grpc_port), "WORKERS": "2"}
    with gateway_process(env) as process:
        yield process


def _http_codes(gateway: GatewayProcess, key: str) -> set[int]:
    """The statuses of ``ROUNDS`` requests with ``key``, each on a new connection."""
    return {
        httpx.get(f"{gateway.url}/models", headers={"x-api-key": key}).status_code
        for _ in range(ROUNDS)
    }


def _grpc_codes(port: int, key: str) -> set[grpc.StatusCode]:
    """The codes of ``ROUNDS`` calls with ``key``, each on a new channel."""
    codes = set()
    for _ in range(ROUNDS):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelMetadataRequest(name=MODEL)
            try:
                stub.ModelMetadata(request, timeout=10, metadata=[("x-api-key", key)])
            except grpc.RpcError as exc:
                codes.add(exc.code())
            else:
                codes.add(grpc.StatusCode.OK)
    return codes


def _pids(gateway: GatewayProcess) -> set[int]:
    return {
        json.loads(line)["pid"]
        for line in gateway.log_lines()
        if line.startswith("{") and '"endpoint":"/models"' in line
    }


def test_every_worker_and_both_protocols_follow_the_keys_file(
    gateway: GatewayProcess, keys_file: tuple[Path, str], grpc_port: int
) -> None:
    path, alice = keys_file
    assert _http_codes(gateway, alice) == {200}
    assert _grpc_codes(grpc_port, alice) == {grpc.StatusCode.OK}
    assert len(_pids(gateway)) == 2  # both workers answered

    bob = cli_add_key(path, "bob")  # appended in place
    wait_until(lambda: _http_codes(gateway, bob) == {200}, what="bob's key on every worker")
    wait_until(lambda: _grpc_codes(grpc_port, bob) == {grpc.StatusCode.OK}, what="over gRPC")

    kept = [line for line in path.read_text().splitlines() if not line.startswith("alice:")]
    replacement = path.with_suffix(".new")
    replacement.write_text("\n".join(kept) + "\n")
    replacement.replace(path)  # revoked by a rename, as a secret volume updates
    wait_until(lambda: _http_codes(gateway, alice) == {401}, what="alice refused everywhere")
    wait_until(
        lambda: _grpc_codes(grpc_port, alice) == {grpc.StatusCode.UNAUTHENTICATED},
        what="alice refused over gRPC",
    )
    assert _http_codes(gateway, bob) == {200}


def test_a_broken_edit_keeps_the_keys_and_every_worker_says_so(
    gateway: GatewayProcess, keys_file: tuple[Path, str], grpc_port: int
) -> None:
    path, _ = keys_file
    carol = add_key(path, "carol")
    wait_until(lambda: _http_codes(gateway, carol) == {200}, what="carol's key on every worker")
    good = path.read_text()
    path.write_text(good + "dave:not-a-digest\n")  # a typo
    broken_line = len(good.splitlines()) + 1

    def errors_reported() -> set[object]:
        return {
            httpx.get(f"{gateway.url}/ready").json()["api_keys"]["error"] for _ in range(ROUNDS)
        }

    wait_until(
        lambda: errors_reported() == {f"api-keys, line {broken_line}: expected key-id:sha256-hex"},
        what="every worker's /ready to report the broken file",
    )
    assert _http_codes(gateway, carol) == {200}  # the keys last read are in force
    assert _grpc_codes(grpc_port, carol) == {grpc.StatusCode.OK}
    said = [
        json.loads(line)
        for line in gateway.log_lines()
        if '"API keys file could not be read' in line
    ]
    assert sorted(line["level"] for line in said) == ["ERROR", "ERROR"]  # once per worker
    assert len({line["pid"] for line in said}) == 2
    path.write_text(good)
    wait_until(lambda: errors_reported() == {None}, what="the error to clear on every worker")
