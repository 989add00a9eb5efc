"""problem+json answers, byte for byte: every gateway exception and FastAPI's own errors.

The expected bodies were recorded from the gateway's answers before exceptions stopped
knowing HTTP (they now describe what went wrong; ``api/problems.py`` maps them); later
exceptions were added in the same shape. Any change to a status, a header or a byte of
a body fails here.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from inference_gateway import errors
from inference_gateway.api.problems import install_error_handlers
from inference_gateway.errors import InferenceGatewayException

#: (request, status, Retry-After, Connection, body)
RECORDED: list[tuple[str, int, str | None, str | None, str]] = [
    (
        "raise/ClientClosedRequestException",
        499,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:client-closed-request","title":"Client closed request","status":499,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/DeadlineUnreachableException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:deadline-unreachable","title":"Deadline cannot be met","status":503,"detail":"detail text","request_id":"req-1","reason":"deadline_unreachable"}',
    ),
    (
        "raise/ExtensionDisabledException",
        403,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:extension-disabled","title":"Not enabled on this server","status":403,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ModelLoadFailedException",
        400,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:model-load-failed","title":"Model failed to load","status":400,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/TooManyConnectionsException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:too-many-connections","title":"Too many connections","status":503,"detail":"detail text","request_id":"req-1","reason":"connection_limit"}',
    ),
    (
        "raise/TooManyCallsException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:too-many-calls","title":"Too many calls","status":503,"detail":"detail text","request_id":"req-1","reason":"connection_limit"}',
    ),
    (
        "raise/UnauthenticatedException",
        401,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:unauthenticated","title":"Authentication required","status":401,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/HeaderFieldsTooLargeException",
        431,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:header-too-large","title":"Request header fields too large","status":431,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/MalformedRequestException",
        400,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:malformed-request","title":"Malformed request","status":400,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ImageTooLargeException",
        400,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:image-too-large","title":"Image too large","status":400,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/InferenceGatewayException",
        500,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:internal-error","title":"Internal server error","status":500,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "default/InferenceGatewayException",
        500,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:internal-error","title":"Internal server error","status":500,"detail":"Internal server error","request_id":"req-1"}',
    ),
    (
        "raise/InferenceTimeoutException",
        504,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:timeout","title":"Inference timed out","status":504,"detail":"detail text","request_id":"req-1","reason":"deadline_exceeded"}',
    ),
    (
        "raise/InflightBytesException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:memory-pressure","title":"Too many uploads in memory","status":503,"detail":"detail text","request_id":"req-1","reason":"inflight_bytes"}',
    ),
    (
        "raise/InvalidImageException",
        400,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:invalid-image","title":"Invalid image","status":400,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/InvalidInputException",
        400,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:invalid-input","title":"Invalid input","status":400,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ModelInferenceException",
        500,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:inference-failed","title":"Inference failed","status":500,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/NonFiniteScoresException",
        500,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:inference-failed","title":"Inference failed","status":500,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ModelFailedException",
        503,
        "5",
        None,
        '{"type":"urn:inference-gateway:problem:model-failed","title":"Model failed","status":503,"detail":"detail text","request_id":"req-1","reason":"model_failed"}',
    ),
    (
        "raise/ModelNotFoundException",
        404,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:model-not-found","title":"Model not found","status":404,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ModelNotLoadedException",
        503,
        "5",
        None,
        '{"type":"urn:inference-gateway:problem:model-not-ready","title":"Model not ready","status":503,"detail":"detail text","request_id":"req-1","reason":"not_ready"}',
    ),
    (
        "raise/ModelStalledException",
        503,
        "5",
        None,
        '{"type":"urn:inference-gateway:problem:model-stalled","title":"Model stalled","status":503,"detail":"detail text","request_id":"req-1","reason":"model_stalled"}',
    ),
    (
        "raise/PayloadTooLargeException",
        413,
        None,
        "close",
        '{"type":"urn:inference-gateway:problem:payload-too-large","title":"Payload too large","status":413,"detail":"detail text","request_id":"req-1","reason":"payload_too_large"}',
    ),
    (
        "raise/QueueFullException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:queue-full","title":"Inference queue full","status":503,"detail":"detail text","request_id":"req-1","reason":"queue_full"}',
    ),
    (
        "raise/RequestTimeoutException",
        408,
        None,
        "close",
        '{"type":"urn:inference-gateway:problem:request-timeout","title":"Request timeout","status":408,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "raise/ServiceDrainingException",
        503,
        "1",
        None,
        '{"type":"urn:inference-gateway:problem:draining","title":"Service shutting down","status":503,"detail":"detail text","request_id":"req-1","reason":"draining"}',
    ),
    (
        "raise/UnsupportedMediaTypeException",
        415,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:unsupported-media-type","title":"Unsupported media type","status":415,"detail":"detail text","request_id":"req-1"}',
    ),
    (
        "get /nope",
        404,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:not-found","title":"Not Found","status":404,"detail":"Not Found","request_id":"req-1"}',
    ),
    (
        "post /q",
        405,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:method-not-allowed","title":"Method Not Allowed","status":405,"detail":"Method Not Allowed","request_id":"req-1"}',
    ),
    (
        "get /q?n=x",
        422,
        None,
        None,
        '{"type":"urn:inference-gateway:problem:validation-error","title":"Request validation failed","status":422,"detail":"query.n: Input should be a valid integer, unable to parse string as an integer","request_id":"req-1","errors":[{"loc":["query","n"],"msg":"Input should be a valid integer, unable to parse string as an integer"}]}',
    ),
]


class _WithRequestId:
    """Stands in for the observability middleware: every request's id is ``req-1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["request_id"] = "req-1"
        await self.app(scope, receive, send)


def _exception(name: str) -> InferenceGatewayException:
    cls = getattr(errors, name)
    if cls is errors.InvalidImageException:
        return errors.InvalidImageException("detail text", reason="truncated")
    exc: InferenceGatewayException = cls("detail text")
    return exc


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_named(name: str) -> None:
        raise _exception(name)

    @app.get("/default/{name}")
    async def raise_default(name: str) -> None:
        raise getattr(errors, name)()

    @app.get("/q")
    async def query(n: int) -> dict[str, int]:
        return {"n": n}

    return TestClient(_WithRequestId(app))


@pytest.mark.parametrize(("request_line", "status", "retry_after", "connection", "body"), RECORDED)
def test_problem_answers_are_unchanged(
    client: TestClient,
    request_line: str,
    status: int,
    retry_after: str | None,
    connection: str | None,
    body: str,
) -> None:
    method, _, path = request_line.rpartition(" ")
    response = client.request(method or "GET", path if method else "/" + request_line)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("retry-after") == retry_after
    assert response.headers.get("connection") == connection
    assert response.content.decode() == body
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="inference-gateway"'
    else:
        assert "www-authenticate" not in response.headers


def test_every_gateway_exception_is_recorded() -> None:
    recorded = {line.removeprefix("raise/") for line, *_ in RECORDED if line.startswith("raise/")}
    assert recorded == set(errors.gateway_exception_names())
