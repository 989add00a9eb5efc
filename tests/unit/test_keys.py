"""Which calls need an API key, on every route and every RPC the gateway serves.

Health probes never need one (orchestrators send none), on HTTP (``/health``,
``/ready``, ``/v2/health/live``, ``/v2/health/ready``) and gRPC (``ServerLive``,
``ServerReady``) alike; everything that serves or describes models does. The routes and
RPCs are read from the app and the service definition, so a new one is checked too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inference_gateway.api import keys as keys_module
from inference_gateway.api.keys import PROBE_PATHS, add_key
from inference_gateway.api.v2.grpc import OPEN_RPCS, RPCS
from tests.helpers import ControlledBackend, controlled_app, json_log_capture, ready_client
from tests.scrape import parse, value
from tests.servers import free_port

#: Open without a key besides the probes: scrapes, the API's description, the page.
ADMIN_TOKEN = "t" * 32
#: What the repository extension needs besides a key (the admin token stays separate).
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
OPEN_ROUTES = {"/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/", "/ui/{name}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, int]]:
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    key = add_key(keys_file, "ops")
    port = free_port()
    app = controlled_app(
        ControlledBackend(), api_keys_file=keys_file, grpc_port=port, admin_token=ADMIN_TOKEN
    )
    with TestClient(app) as client:
        ready_client(client)
        yield client, key, port


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route the API describes, and those it keeps out of its description."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(method.upper(), path) for path, item in paths.items() for method in item]
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and not route.include_in_schema:
            routes.extend((method, route.path) for method in sorted(route.methods))
    return routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "no-such-model", path)  # nothing is unloaded


def test_every_route_needs_a_key_but_the_probes_and_the_open_ones(
    served: tuple[TestClient, str, int],
) -> None:
    client, key, _ = served
    routes = _routes(client)
    assert {path for _, path in routes} >= PROBE_PATHS
    for method, path in routes:
        url = _concrete(path)
        without = client.request(method, url)
        if path in PROBE_PATHS or path in OPEN_ROUTES:
            assert without.status_code != 401, (method, path)
        else:
            assert without.status_code == 401, (method, path, without.status_code)
            with_key = client.request(method, url, headers={"x-api-key": key, **ADMIN})
            assert with_key.status_code != 401, (method, path)


def test_probes_answer_without_a_key_on_both_protocols(
    served: tuple[TestClient, str, int],
) -> None:
    client, _, port = served
    for path in sorted(PROBE_PATHS):
        assert client.get(path).status_code == 200, path
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready


#: The unary RPCs (the one streaming RPC is not offered, and answers UNIMPLEMENTED).
UNARY_RPCS = [
    rpc
    for rpc in RPCS
    if not service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    .methods_by_name[rpc]
    .server_streaming
]


@pytest.mark.parametrize("rpc", UNARY_RPCS)
def test_every_rpc_but_the_probes_needs_a_key(
    served: tuple[TestClient, str, int], rpc: str
) -> None:
    _, key, port = served
    method = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[rpc]
    request = getattr(service_pb2, method.input_type.name)(
        **({"name": "no-such-model"} if "name" in method.input_type.fields_by_name else {})
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{rpc}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=getattr(service_pb2, method.output_type.name).FromString,
        )
        code = _code(lambda: call(request, timeout=10))
        if rpc in OPEN_RPCS:
            assert code is grpc.StatusCode.OK, rpc
        else:
            assert code is grpc.StatusCode.UNAUTHENTICATED, (rpc, code)
            keyed = _code(
                lambda: call(request, timeout=10, metadata=[("x-api-key", key), *ADMIN.items()])
            )
            assert keyed is not grpc.StatusCode.UNAUTHENTICATED, rpc


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_the_probe_paths_are_the_documented_ones() -> None:
    readme = Path(__file__).resolve().parents[2] / "docs" / "security.md"
    text = readme.read_text(encoding="utf-8")
    for path in PROBE_PATHS:
        assert f"`{path}`" in text, path


# --- The keys file at its edges ---------------------------------------------------------


def _ready_keys(client: TestClient) -> dict[str, object]:
    state = client.get("/ready").json()["api_keys"]
    assert isinstance(state, dict)
    return state


def test_a_broken_or_deleted_keys_file_keeps_the_keys_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo while revoking a key must neither open the gateway nor lock everyone out:
    the keys last read stay, and the failure is an ERROR line (once per broken version
    of the file, not per request), a count, and the error on ``/ready`` until a good
    version is read. A deleted file is the same."""
    monkeypatch.setattr(keys_module, "RELOAD_CHECK_SECONDS", 0.0)  # check at every call
    path = tmp_path / "api-keys"
    alice = add_key(path, "alice")
    bob = add_key(path, "bob")
    with json_log_capture() as logs:
        app = controlled_app(ControlledBackend(), api_keys_file=path)
        with TestClient(app) as client:
            ready_client(client)
            state = _ready_keys(client)
            assert (state["keys"], state["error"]) == (2, None)

            def works(key: str) -> bool:
                return bool(client.get("/models", headers={"x-api-key": key}).status_code == 200)

            # Revoking alice with a typo: the file no longer parses.
            path.write_text(path.read_text().replace("alice:", "alice ", 1) + "# revoked\n")
            assert works(alice) and works(bob)  # the keys last read, both of them
            for _ in range(3):
                works(bob)
            state = _ready_keys(client)
            assert state["keys"] == 2
            assert state["error"] == "api-keys, line 1: expected key-id:sha256-hex"
            assert alice not in json.dumps(state) and str(tmp_path) not in json.dumps(state)
            # The fix is read at once; the error is gone.
            path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
            assert not works(alice) and works(bob)
            assert _ready_keys(client)["error"] is None
            # A deleted file: the keys stay, and it is said.
            path.unlink()
            assert works(bob)
            state = _ready_keys(client)
            assert state["error"] == "API_KEYS_FILE cannot be read (FileNotFoundError)"
            samples = parse(client.get("/metrics").text)
    errors = [json.loads(line) for line in logs.getvalue().splitlines() if '"ERROR"' in line]
    assert [line["error"] for line in errors] == [
        "api-keys, line 1: expected key-id:sha256-hex",
        "API_KEYS_FILE cannot be read (FileNotFoundError)",
    ]
    assert all(line["keys"] in (1, 2) for line in errors)
    assert value(samples, "api_keys_reload_failures_total") == 2
    assert alice not in logs.getvalue() and bob not in logs.getvalue()


def test_a_keys_file_restored_as_it_was_clears_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted, then put back as it was (``mv`` back, ``cp -p``: the same time and size):
    the keys in force are the file's again, and /ready no longer reports an error."""
    monkeypatch.setattr(keys_module, "RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "api-keys"
    add_key(path, "alice")
    keys = keys_module.ApiKeys(path)
    backup = tmp_path / "backup"
    path.rename(backup)
    assert keys.state().error == "API_KEYS_FILE cannot be read (FileNotFoundError)"
    backup.rename(path)
    assert keys.state().error is None
