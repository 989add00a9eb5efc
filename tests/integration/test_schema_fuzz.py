"""The served OpenAPI document, checked against the server it describes by a fuzzer.

schemathesis reads a real ``inference-gateway serve``'s ``/openapi.json`` (``ADMIN_TOKEN``
and ``GRPC_PORT`` set, so every extension is on) and sends every operation requests
the document allows and requests it does not. Each answer must be a status the
document lists for that operation (``status_code_conformance``), with a content type
(``content_type_conformance``) and a body (``response_schema_conformance``) it lists
for that status, and never a 5xx (``not_a_server_error``). A second server, with
``API_KEYS_FILE`` set and no ``ADMIN_TOKEN``, checks the 401 of every operation that
needs a key (and of no other), and the 403 of the model repository extension switched
off.

Bounded and repeatable: schemathesis's coverage cases (boundary values, missing and
mistyped parameters, unexpected methods) and then a few generated examples per
operation, positive and negative, with no Hypothesis deadline, derandomized from a
fixed seed, and no example database: about 20-40 s on two cores, most of it coverage
cases. Run alone:
``.venv/bin/python -m pytest tests/integration/test_schema_fuzz.py``.

Decisions: model repository calls carry the admin token, or every one would be a 401
that never reaches its body's decoding. Operations on one model are sent the served
model's name (and, where they read a body, its version), so the fuzzer works on what
the route does with the request, not only on its 404 for an unknown name; the lookups'
404s are still fuzzed through the generated versions and the repository's names. The
repository's ``unload`` is never sent the served model's name: it would take the only
model away mid-run, and every later answer would be a 503 (its success is tested in
``test_oip_repository.py``). The stateful phase is off: the operations are not linked.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import hypothesis
import pytest
import schemathesis
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inference_gateway.api.keys import add_key, needs_key
from tests.servers import GatewayProcess, gateway_process

pytestmark = pytest.mark.integration

# Hypothesis keeps caches (constants found in the source, Unicode tables) in its home
# directory, by default ``.hypothesis`` in the working directory, and fills them while
# pytest collects: keep them out of the checkout. No examples are kept (database: none).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "inference-gateway-hypothesis")

TOKEN = "schema-fuzz-admin-token"  # noqa: S105 - a test server's token
MODEL = "efficientnet-lite0"
VERSION = "1"
#: Per operation, after the coverage cases; enough to reach each route's decoding.
MAX_EXAMPLES = 8
#: Per operation with API keys on, without coverage cases: every one is a 401 or a probe.
KEYLESS_EXAMPLES = 2
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Operations on one model: fuzzed with the served model's name (the repository's take
#: whatever name is generated: a 404, and no model taken away).
MODEL_ROUTES = ("/models/{name}", "/v2/models/{name}")
#: Operations that read a body: fuzzed with the served version too.
BODY_ROUTES = ("/predict", "/infer")
REPOSITORY = "/v2/repository/"
UNLOAD = REPOSITORY + "models/{name}/unload"
#: Hypothesis's health checks judge generation speed and filtering: on a busy machine
#: they fail runs that found nothing, so they are off; the run is bounded by examples.
SETTINGS = hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))


def _config(max_examples: int, *, coverage: bool = True) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 26,
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"coverage": {"enabled": coverage}, "stateful": {"enabled": False}},
        }
    )


@pytest.fixture(scope="module")
def gateway(grpc_port: int) -> Iterator[GatewayProcess]:
    env = {"ADMIN_TOKEN": TOKEN, "GRPC_PORT": str(grpc_port), "WORKERS": "1"}
    with gateway_process(env) as process:
        yield process


@pytest.fixture(scope="module")
def api_schema(gateway: GatewayProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{gateway.url}/openapi.json", config=_config(MAX_EXAMPLES)
    )


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis (4.32) names each operation's subtest through the node's
    ``_nodeid``, which pytest 9.2 no longer has: give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@fuzzed.parametrize()
@SETTINGS
def test_every_answer_is_documented(case: schemathesis.Case[Any]) -> None:
    """Every status, content type and body the server answers is in its document."""
    path = case.operation.path
    if case.path_parameters and path.startswith(MODEL_ROUTES):
        case.path_parameters["name"] = MODEL  # past the lookup, into the route's own work
    if path.endswith(BODY_ROUTES):  # and past the version's, into the body's decoding
        for where in (case.path_parameters, case.query):
            if where and "version" in where:
                where["version"] = VERSION
    if path == UNLOAD and case.path_parameters.get("name") == MODEL:
        case.path_parameters["name"] = MODEL + "-absent"  # the only model stays served
    headers = {"Authorization": f"Bearer {TOKEN}"} if path.startswith(REPOSITORY) else None
    case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)


class KeysFile(NamedTuple):
    """An ``API_KEYS_FILE`` and the one key it holds."""

    path: Path
    key: str


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> KeysFile:
    path = tmp_path_factory.mktemp("keys") / "keys"
    return KeysFile(path, add_key(path, "fuzz"))


@pytest.fixture(scope="module")
def keyed_gateway(keys_file: KeysFile) -> Iterator[GatewayProcess]:
    env = {"API_KEYS_FILE": str(keys_file.path), "WORKERS": "1"}  # and no ADMIN_TOKEN
    with gateway_process(env) as process:
        yield process


@pytest.fixture(scope="module")
def keyed_schema(keyed_gateway: GatewayProcess) -> schemathesis.BaseSchema:
    # Only the answers of the key check and of the repository extension switched off
    # are new here: a few examples, no coverage cases.
    config = _config(KEYLESS_EXAMPLES, coverage=False)
    return schemathesis.openapi.from_url(f"{keyed_gateway.url}/openapi.json", config=config)


keyless = schemathesis.pytest.from_fixture("keyed_schema")


@keyless.parametrize()
@SETTINGS
def test_with_api_keys_every_refusal_is_documented(
    case: schemathesis.Case[Any], keys_file: KeysFile
) -> None:
    """With ``API_KEYS_FILE``, a request without a key is a documented 401 wherever
    one is needed, and the probes stay open; with a key but no ``ADMIN_TOKEN``, the
    model repository extension is a documented 403."""
    path = case.operation.path
    if path.startswith(REPOSITORY):
        response = case.call_and_validate(
            headers={"X-API-Key": keys_file.key},
            checks=CHECKS,
            timeout=30,
        )
        assert response.status_code == 403
    else:
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        assert (response.status_code == 401) == needs_key(path)
