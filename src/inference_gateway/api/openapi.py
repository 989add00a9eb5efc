"""The OpenAPI document the gateway serves: every status each operation can answer, with
the body and content type it really has.

Two error shapes, as each protocol's clients parse them: the gateway's own routes
answer RFC 9457 ``application/problem+json`` (`Problem`), the Open Inference Protocol's
``/v2`` routes ``{"error": "..."}`` as ``application/json`` (`ProtocolError`). A route
declares what its own code answers with `problem_responses` or `protocol_responses`;
`install_openapi` adds what the layers around every route answer, by the rules those
layers apply (`document_edge_statuses`), and drops FastAPI's default 422, whose
``HTTPValidationError`` body the gateway never sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from inference_gateway.api.problems import PROBLEM_CONTENT_TYPE
from inference_gateway.api.schemas import (
    InferRequestBody,
    Problem,
    ProtocolError,
    RepositoryRequestBody,
)

#: A FastAPI ``responses=`` mapping.
Responses = dict[int | str, dict[str, Any]]

#: Where the Open Inference Protocol's routes live: their errors are ``{"error"}``
#: (the rule `api.keys.ApiKeyMiddleware` answers by too).
PROTOCOL_PREFIX = "/v2"
_REF = "#/components/schemas/{model}"
#: The schemas the helpers refer to, added to every document's components.
_COMPONENTS: tuple[type[BaseModel], ...] = (
    Problem,
    ProtocolError,
    InferRequestBody,
    RepositoryRequestBody,
)
#: FastAPI's own validation error schemas, which the gateway never answers with.
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")

#: What each status means, wherever it is answered.
STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "The request or its input is invalid.",
    401: "No valid credential: an API key where API_KEYS_FILE is set; on the model "
    "repository extension, the ADMIN_TOKEN as a bearer token (WWW-Authenticate).",
    403: "The extension is off: the model repository without ADMIN_TOKEN, statistics "
    "without metrics.",
    404: "No such model or version, or no default model to answer.",
    408: "The request body did not arrive within REQUEST_BODY_TIMEOUT (Connection: close).",
    413: "The body is over MAX_BODY_BYTES (Connection: close).",
    415: "The body's Content-Type or Content-Encoding is not accepted.",
    422: "A query parameter is out of range.",
    500: "An unexpected error; quote the X-Request-ID response header.",
    503: "Not ready, shutting down, or refusing work to stay within its limits "
    "(queue, deadline, MAX_INFLIGHT_BYTES; Retry-After).",
    504: "The request's deadline passed before the answer.",
}
#: What the body limits (`api.limits.BodySizeLimitMiddleware`) answer, on every
#: operation that reads a body.
BODY_STATUSES = (408, 413, 415, 503)
#: What the observability middleware answers for any exception a route lets through.
EVERY_STATUS = (500,)

_EDGE_NOTE = (
    "\n\nBesides the statuses each operation lists, any request can be refused before "
    "it reaches an operation, as application/problem+json with Connection: close: 400 "
    "(malformed HTTP), 408 (headers slower than REQUEST_HEADER_TIMEOUT), 431 (headers "
    "over MAX_HEADER_BYTES or MAX_HEADER_COUNT) and 503 (over MAX_CONNECTIONS)."
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _error(status: int, content_type: str, model: type[BaseModel]) -> dict[str, Any]:
    return {
        "description": STATUS_DESCRIPTIONS[status],
        "content": {content_type: {"schema": _ref(model)}},
    }


def problem_responses(*statuses: int) -> Responses:
    """``responses=`` for statuses a gateway route answers as problem+json."""
    return {status: _error(status, PROBLEM_CONTENT_TYPE, Problem) for status in statuses}


def protocol_responses(*statuses: int) -> Responses:
    """``responses=`` for statuses a ``/v2`` route answers as ``{"error": "..."}``."""
    return {status: _error(status, "application/json", ProtocolError) for status in statuses}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its body itself, as JSON of ``model``."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _ref(model)}},
        }
    }


#: An inference request: one image (a 1x1 PNG, base64) and its 3 most likely classes.
_IMAGE_EXAMPLE = {
    "inputs": [
        {
            "name": "input",
            "shape": [1],
            "datatype": "BYTES",
            "data": [
                {
                    "b64": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGM4UaEBAAN0"
                    "AWnL+tDXAAAAAElFTkSuQmCC"
                }
            ],
        }
    ],
    "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
}
#: The ``/v2`` inference routes: a JSON request, or (binary data extension) a JSON
#: header of ``Inference-Header-Content-Length`` bytes followed by the tensors' bytes;
#: the answer likewise.
INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ref(InferRequestBody),
                "examples": {"image": {"summary": "One PNG, top 3", "value": _IMAGE_EXAMPLE}},
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "Binary data extension: how many bytes of the body are JSON.",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "responses": {
        "200": {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
}
#: The model repository routes: an empty body, or a JSON object.
REPOSITORY_DOC = json_body(RepositoryRequestBody, required=False)


def document_edge_statuses(
    document: dict[str, Any], needs_key: Callable[[str], bool] | None
) -> dict[str, Any]:
    """Add to every operation of ``document`` (in place; returned) the statuses the
    layers around the routes answer: 500 everywhere, 401 on the paths ``needs_key``
    guards (None: API keys are off), the body limits' statuses where an operation has a
    request body; and drop FastAPI's default 422.
    """
    for path, item in document.get("paths", {}).items():
        protocol = path == PROTOCOL_PREFIX or path.startswith(PROTOCOL_PREFIX + "/")
        content_type, model = (
            ("application/json", ProtocolError) if protocol else (PROBLEM_CONTENT_TYPE, Problem)
        )
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if _is_fastapi_422(responses.get("422")):
                del responses["422"]
            statuses = list(EVERY_STATUS)
            if needs_key is not None and needs_key(path):
                statuses.append(401)
            if "requestBody" in operation:
                statuses += BODY_STATUSES
            for status in statuses:
                responses.setdefault(str(status), _error(status, content_type, model))
            operation["responses"] = dict(sorted(responses.items()))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_422:
        schemas.pop(name, None)
    _, defs = models_json_schema([(m, "validation") for m in _COMPONENTS], ref_template=_REF)
    schemas.update(defs.get("$defs", {}))
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    info = document.setdefault("info", {})
    info["description"] = (info.get("description", "") + _EDGE_NOTE).strip()
    return document


def _is_fastapi_422(response: dict[str, Any] | None) -> bool:
    if response is None:
        return False
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def install_openapi(app: FastAPI, needs_key: Callable[[str], bool] | None) -> None:
    """Serve ``app``'s OpenAPI document with `document_edge_statuses` applied (built once,
    at the first request for it). ``needs_key``: which paths need an API key (None:
    keys are off)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_edge_statuses(generate(), needs_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
