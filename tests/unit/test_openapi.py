"""The served OpenAPI document lists each status an operation can answer, with the body
and content type it really has (`api/openapi.py`); the fuzzer in
``tests/integration/test_schema_fuzz.py`` checks it against a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference_gateway.api.keys import add_key, needs_key
from tests.helpers import ControlledBackend, controlled_app

TOKEN = "openapi-admin-token-42"  # noqa: S105 - a test app's token
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROTOCOL_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}}
BODY_LIMITS = {"408", "413", "415", "503"}


def _document(**settings: object) -> dict[str, Any]:
    with TestClient(controlled_app(ControlledBackend(), **settings)) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _document(admin_token=TOKEN)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def _errors(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s: r for s, r in operation["responses"].items() if int(s) >= 400}


def test_v2_errors_are_the_protocols_json_and_the_gateways_are_problems(
    document: dict[str, Any],
) -> None:
    for path, method, operation in _operations(document):
        expected = PROTOCOL_ERROR if path.startswith("/v2") else PROBLEM
        for status, response in _errors(operation).items():
            assert response["content"] == expected, (method, path, status)
    schemas = document["components"]["schemas"]
    assert schemas["ProtocolError"]["required"] == ["error"]
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["required"])


def test_422_is_documented_only_where_a_parameter_can_fail_validation(
    document: dict[str, Any],
) -> None:
    with_422 = {path for path, _, op in _operations(document) if "422" in op["responses"]}
    # top_k (1..20) is the only parameter that is not a free string.
    assert with_422 == {
        "/predict",
        "/models/{name}/predict",
        "/models/{name}/versions/{version}/predict",
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_documents_a_500_and_those_reading_a_body_its_limits(
    document: dict[str, Any],
) -> None:
    reading = set()
    for path, method, operation in _operations(document):
        statuses = set(operation["responses"])
        assert "500" in statuses, (method, path)
        if "requestBody" in operation:
            reading.add(path)
            assert statuses >= BODY_LIMITS, (method, path)
    assert reading == {
        "/predict",
        "/models/{name}/predict",
        "/models/{name}/versions/{version}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
    }
    assert "413" not in document["paths"]["/v2/models/{name}"]["get"]["responses"]


def test_v2_routes_document_what_they_answer(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str = "get") -> set[str]:
        return set(document["paths"][path][method]["responses"])

    assert statuses("/v2/models/{name}/versions/{version}/ready") == {"200", "404", "500", "503"}
    assert statuses("/v2/models/stats") == {"200", "403", "404", "500", "503"}
    assert statuses("/v2/repository/index", "post") >= {"400", "401", "403"}
    assert statuses("/v2/repository/models/{name}/load", "post") >= {"404", "504"}
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["responses"]["200"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}


def test_401_is_documented_where_an_api_key_is_needed(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    add_key(keys_file, "docs")
    keyed = _document(admin_token=TOKEN, api_keys_file=keys_file)
    for path, method, operation in _operations(keyed):
        assert ("401" in operation["responses"]) == (
            needs_key(path) or path.startswith("/v2/repository/")  # the admin token's
        ), (method, path)
    assert "401" in keyed["paths"]["/predict"]["post"]["responses"]
    assert "401" not in keyed["paths"]["/health"]["get"]["responses"]


def test_without_api_keys_no_401_is_documented_outside_the_repository(
    document: dict[str, Any],
) -> None:
    for path, method, operation in _operations(document):
        if not path.startswith("/v2/repository/"):
            assert "401" not in operation["responses"], (method, path)
