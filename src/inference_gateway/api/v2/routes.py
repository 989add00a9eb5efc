"""The Open Inference Protocol over HTTP (KServe v2, Triton): a thin codec at the edge.

Every route decodes its request into "these images or tensors for model M, version V",
asks the same registry and batchers as ``/predict`` (same limits, admission, metrics,
logs and spans) through `inference.py`, which the gRPC service shares, and encodes the
answer the way `tritonclient` and KServe's clients parse it. Errors are the protocol's
``{"error": "..."}`` with Triton's statuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from inference_gateway.api.admin import require_admin
from inference_gateway.api.dependencies import (
    ControlDep,
    RegistryDep,
    SettingsDep,
    TelemetryDep,
)
from inference_gateway.api.limits import request_deadline
from inference_gateway.api.openapi import INFER_DOC, REPOSITORY_DOC, protocol_responses
from inference_gateway.api.problems import error_headers, http_status
from inference_gateway.api.v2 import inference
from inference_gateway.api.v2.codec import (
    INFERENCE_HEADER_CONTENT_LENGTH,
    InferRequest,
    decode_infer_request,
    decode_repository_request,
    encode_infer_response,
    error_body,
    parse_header_length,
)
from inference_gateway.errors import ClientClosedRequestException, InferenceGatewayException
from inference_gateway.inference.host import ModelHost, Scored


def error_response(exc: InferenceGatewayException) -> Response:
    """The protocol's error answer, ``{"error": ...}``, as its clients parse it."""
    return Response(
        error_body(exc.detail),
        status_code=http_status(exc),
        headers=error_headers(exc),
        media_type="application/json",
    )


def _error_response(request: Request, exc: InferenceGatewayException) -> Response:
    """`error_response`; the access line and metrics see the exception."""
    request.scope.setdefault("state", {})["error"] = exc
    return error_response(exc)


class V2Route(APIRoute):
    """A route whose gateway errors are answered as ``{"error": ...}``, not problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler to render the protocol's errors."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except InferenceGatewayException as exc:
                return _error_response(request, exc)
            except ClientDisconnect:  # the client left mid-upload: a 499, not a bug
                gone = ClientClosedRequestException("The client disconnected during the upload.")
                return _error_response(request, gone)
            except Exception as exc:  # a bug: still the protocol's body, never problem+json
                request.scope.setdefault("state", {})["error"] = exc  # logged with traceback
                return error_response(
                    InferenceGatewayException(
                        "An unexpected error occurred; quote the X-Request-ID response header."
                    )
                )

        return handle


router = APIRouter(prefix="/v2", route_class=V2Route, tags=["Open Inference Protocol"])

# What each route's own code answers; 500, 401 (API keys) and the body limits'
# statuses are added for every route by `install_openapi`.
_UNAVAILABLE = protocol_responses(503)
_LOOKUP = protocol_responses(404, 503)  # an unknown model or version; one not serving
_STATISTICS = protocol_responses(403, 404, 503)
_INFER = protocol_responses(400, 404, 500, 503, 504)


# --- server ----------------------------------------------------------------------------
@router.get("", summary="Server metadata")
async def server_metadata(settings: SettingsDep) -> dict[str, object]:
    """Name, version and the protocol extensions the gateway supports."""
    return inference.server_metadata(settings)


@router.get("/health/live", summary="Server liveness", responses=_UNAVAILABLE)
async def server_live(registry: RegistryDep) -> dict[str, bool]:
    """``{"live": true}`` while the process can serve (503 once a model's worker has
    given up for good)."""
    registry.check_live()
    return {"live": True}


@router.get("/health/ready", summary="Server readiness", responses=_UNAVAILABLE)
async def server_ready(registry: RegistryDep) -> dict[str, bool]:
    """``{"ready": true}`` when every model is ready (as ``/ready``); else 503."""
    registry.check_ready()
    return {"ready": True}


# --- models ----------------------------------------------------------------------------
@router.get("/models", summary="Model names")
async def list_models(registry: RegistryDep) -> dict[str, list[str]]:
    """``{"models": [...]}``: every model the gateway knows (KServe's list), served or
    not; ``GET /models`` says how each one is."""
    return {"models": registry.names()}


# Before the metadata route, whose {name} would take "stats".
@router.get(
    "/models/stats",
    summary="Statistics of every model (statistics extension)",
    responses=_STATISTICS,
)
@router.get("/models/{name}/stats", summary="Statistics of a model", responses=_STATISTICS)
@router.get(
    "/models/{name}/versions/{version}/stats",
    summary="Statistics of one version",
    responses=_STATISTICS,
)
async def model_statistics(
    registry: RegistryDep,
    telemetry: TelemetryDep,
    name: str | None = None,
    version: str | None = None,
) -> dict[str, object]:
    """Triton's statistics extension, from the counters behind ``/metrics``."""
    return await inference.model_statistics(registry, telemetry.metrics, name, version)


@router.get("/models/{name}", summary="Model metadata", responses=_LOOKUP)
@router.get(
    "/models/{name}/versions/{version}", summary="Model metadata (one version)", responses=_LOOKUP
)
async def model_metadata(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """Inputs and outputs of the model as the protocol describes them."""
    return inference.model_metadata(registry, name, version)


@router.get("/models/{name}/ready", summary="Model readiness", responses=_LOOKUP)
@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness (one version)",
    responses=_LOOKUP,
)
async def model_ready(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """``{"name": ..., "ready": true}`` when the version serves; else 503."""
    registry.resolve(name, version).check_ready()
    return {"name": name, "ready": True}


@router.get("/models/{name}/config", summary="Model configuration (Triton)", responses=_LOOKUP)
@router.get(
    "/models/{name}/versions/{version}/config",
    summary="Model configuration (one version)",
    responses=_LOOKUP,
)
async def model_config(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """Triton's model configuration: what `image_client`-style tools read to preprocess
    on their side (``max_batch_size``, the input's ``format`` and ``dims``)."""
    return inference.model_config(registry, name, version)


# --- the model repository extension (ADMIN_TOKEN) ---------------------------------------
@router.post(
    "/repository/index",
    summary="Model repository index",
    responses=protocol_responses(400, 401, 403),
    openapi_extra=REPOSITORY_DOC,
)
async def repository_index(
    request: Request, settings: SettingsDep, control: ControlDep
) -> list[dict[str, str]]:
    """Every model of the repository with each version's state; ``{"ready": true}``
    lists only the ready ones. Needs ``Authorization: Bearer <ADMIN_TOKEN>``."""
    require_admin(settings, request.headers.get("authorization"))
    decoded = decode_repository_request(await request.body())
    return inference.repository_index(control, ready_only=decoded.ready_only)


@router.post(
    "/repository/models/{name}/load",
    summary="Load a model from the repository",
    responses=protocol_responses(400, 401, 403, 404, 503, 504),
    openapi_extra=REPOSITORY_DOC,
)
async def repository_load(
    name: str, request: Request, settings: SettingsDep, control: ControlDep
) -> dict[str, object]:
    """Serve the model from the repository directory (rescanned first), answering once
    each of its versions is ready (or failed: 400). A model unloaded before serves
    again. Needs ``Authorization: Bearer <ADMIN_TOKEN>``."""
    require_admin(settings, request.headers.get("authorization"))
    decoded = decode_repository_request(await request.body())
    inference.check_load_parameters(decoded.parameters)
    remaining = request_deadline(request, settings) - time.monotonic()
    await control.load(name, max(remaining, 0.0))
    return {}


@router.post(
    "/repository/models/{name}/unload",
    summary="Unload a model",
    responses=protocol_responses(400, 401, 403, 404),
    openapi_extra=REPOSITORY_DOC,
)
async def repository_unload(
    name: str, request: Request, settings: SettingsDep, control: ControlDep
) -> dict[str, object]:
    """Take the model out of service (requests already routed to it finish) and keep it
    out, whatever the repository polls find, until it is loaded again. Needs
    ``Authorization: Bearer <ADMIN_TOKEN>``."""
    require_admin(settings, request.headers.get("authorization"))
    decode_repository_request(await request.body())  # unload_dependents: no ensembles here
    await control.unload(name)
    return {}


# --- inference -------------------------------------------------------------------------
@router.post("/models/{name}/infer", summary="Inference", responses=_INFER, openapi_extra=INFER_DOC)
@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference (one version)",
    responses=_INFER,
    openapi_extra=INFER_DOC,
)
async def infer(
    name: str,
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    version: str | None = None,
) -> Response:
    """Run images (a ``BYTES`` tensor of encoded images, decoded with the model's own
    preprocessing) or tensors the client preprocessed (``FP32``/``FP16``) through the
    model; answer its scores, or the classification extension's top classes."""
    async with registry.lease(name, version) as host:
        request.scope["state"]["model"] = host.key
        host.require_ready()
        deadline = request_deadline(request, settings)
        host.check_admission(deadline)  # shed load before reading the upload
        body = await request.body()
        header_length = parse_header_length(request.headers.get(INFERENCE_HEADER_CONTENT_LENGTH))
        decoded = await inference.decode(
            len(body) if header_length is None else header_length,  # the JSON: the slow part
            partial(
                decode_infer_request,
                body,
                header_length,
                max_elements=inference.max_elements(host, settings),
                max_bytes_elements=inference.max_bytes_elements(settings),
            ),
        )
        scored = await inference.run(host, decoded, settings, deadline)
        return _answer(request, host, decoded, scored)


def _answer(
    request: Request, host: ModelHost, decoded: InferRequest, scored: list[Scored]
) -> Response:
    answered = inference.answer(host, decoded, scored)
    body, header_length = encode_infer_response(
        model_name=host.model_name,
        model_version=host.model_version,
        request_id=decoded.id,
        outputs=answered.outputs,
        binary=[decoded.wants_binary(output) for output in answered.requested],
    )
    request.scope["state"]["inference"] = answered.log
    headers = {} if header_length is None else {INFERENCE_HEADER_CONTENT_LENGTH: str(header_length)}
    media_type = "application/json" if header_length is None else "application/octet-stream"
    return Response(body, headers=headers, media_type=media_type)
