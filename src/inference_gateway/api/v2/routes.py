"""The Open Inference Protocol over HTTP (KServe v2, Triton): a thin codec at the edge.

Every route decodes its request into "these images or tensors for model M, version V",
asks the same registry and batchers as ``/predict`` (same limits, admission, metrics,
logs and spans), and encodes the answer the way `tritonclient` and KServe's clients
parse it. Errors are the protocol's ``{"error": "..."}`` with Triton's statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from inference_gateway import __version__
from inference_gateway.api.dependencies import RegistryDep, SettingsDep
from inference_gateway.api.limits import request_deadline
from inference_gateway.api.problems import http_status
from inference_gateway.api.v2.codec import (
    InferRequest,
    InputTensor,
    OutputTensor,
    V2InputError,
    classification_output,
    decode_infer_request,
    encode_infer_response,
    error_body,
)
from inference_gateway.config import Settings
from inference_gateway.errors import InferenceGatewayException
from inference_gateway.inference.host import ModelHost, Scored
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.logging import InferenceLogFields

#: What the server says it speaks (``GET /v2``).
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration")
BINARY_HEADER = "inference-header-content-length"
_TRITON_TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "BYTES": "TYPE_STRING"}


def _error_response(request: Request, exc: InferenceGatewayException) -> Response:
    """The protocol's error answer; the access line and metrics see the exception."""
    request.scope.setdefault("state", {})["error"] = exc
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    status = http_status(exc)
    return Response(
        error_body(exc.detail), status_code=status, headers=headers, media_type="application/json"
    )


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

        return handle


router = APIRouter(prefix="/v2", route_class=V2Route, tags=["Open Inference Protocol"])


# --- server ----------------------------------------------------------------------------
@router.get("", summary="Server metadata")
async def server_metadata(settings: SettingsDep) -> dict[str, object]:
    """Name, version and the protocol extensions the gateway supports."""
    return {"name": settings.app_name, "version": __version__, "extensions": list(EXTENSIONS)}


@router.get("/health/live", summary="Server liveness")
async def server_live(registry: RegistryDep) -> dict[str, bool]:
    """``{"live": true}`` while the process can serve (503 once a model's worker has
    given up for good)."""
    registry.check_live()
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def server_ready(registry: RegistryDep) -> dict[str, bool]:
    """``{"ready": true}`` when every model is ready (as ``/ready``); else 503."""
    registry.check_ready()
    return {"ready": True}


# --- models ----------------------------------------------------------------------------
def _host(registry: ModelRegistry, name: str, version: str | None) -> ModelHost:
    return registry.resolve(name, version)


def _served(host: ModelHost) -> tuple[Any, Any]:
    model = host.require_ready()
    return model, model.spec


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def model_metadata(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """Inputs and outputs of the model as the protocol describes them."""
    host = _host(registry, name, version)
    model, spec = _served(host)
    versions = [s.version for s in registry.describe(name)[0].versions]
    return {
        "name": name,
        "versions": versions,
        "platform": "onnxruntime_onnx" if model.backend.name == "onnxruntime" else "pytorch",
        "inputs": [
            {
                "name": model.input_name,
                "datatype": "FP32",
                "shape": [-1, *spec.preprocess.tensor_shape],
            }
        ],
        "outputs": [
            {"name": model.output_name, "datatype": "FP32", "shape": [-1, len(spec.labels)]}
        ],
    }


@router.get("/models/{name}/ready", summary="Model readiness")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
async def model_ready(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """``{"name": ..., "ready": true}`` when the version serves; else 503."""
    _host(registry, name, version).check_ready()
    return {"name": name, "ready": True}


@router.get("/models/{name}/config", summary="Model configuration (Triton)")
@router.get("/models/{name}/versions/{version}/config", summary="Model configuration (one version)")
async def model_config(
    name: str, registry: RegistryDep, version: str | None = None
) -> dict[str, object]:
    """Triton's model configuration: what `image_client`-style tools read to preprocess
    on their side (``max_batch_size``, the input's ``format`` and ``dims``)."""
    host = _host(registry, name, version)
    model, spec = _served(host)
    layout = spec.preprocess.layout
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": model.backend.name,
        "max_batch_size": host.batching.max_batch_size,
        "input": [
            {
                "name": model.input_name,
                "data_type": "TYPE_FP32",
                "format": f"FORMAT_{layout}",
                "dims": list(spec.preprocess.tensor_shape),
            }
        ],
        "output": [
            {
                "name": model.output_name,
                "data_type": "TYPE_FP32",
                "dims": [len(spec.labels)],
                "label_filename": "labels.txt",
            }
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(host.batching.max_batch_delay_seconds * 1e6)
        },
    }


# --- inference -------------------------------------------------------------------------
@router.post("/models/{name}/infer", summary="Inference")
@router.post("/models/{name}/versions/{version}/infer", summary="Inference (one version)")
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
        decoded = decode_infer_request(
            body,
            _header_length(request),
            max_elements=settings.max_images_per_request * _elements_per_image(host),
        )
        scored = await _run(host, decoded, settings, deadline)
        return _answer(request, host, decoded, scored)


def _header_length(request: Request) -> int | None:
    value = request.headers.get(BINARY_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise V2InputError(f"{BINARY_HEADER} must be an integer.") from None


def _elements_per_image(host: ModelHost) -> int:
    model = host.require_ready()
    return int(np.prod(model.spec.preprocess.tensor_shape))


async def _run(
    host: ModelHost, decoded: InferRequest, settings: Settings, deadline: float
) -> list[Scored]:
    if len(decoded.inputs) != 1:
        raise V2InputError(f"The model takes one input; the request has {len(decoded.inputs)}.")
    (tensor,) = decoded.inputs
    if tensor.datatype == "BYTES":
        images = _images(tensor, settings.max_images_per_request)
        return list(await asyncio.gather(*(host.score_image(i, deadline) for i in images)))
    rows = _rows(tensor, host, settings.max_images_per_request)
    return list(await asyncio.gather(*(host.score_tensor(row, deadline) for row in rows)))


def _images(tensor: InputTensor, limit: int) -> Sequence[bytes]:
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise V2InputError(
            f"Input '{tensor.name}': BYTES images take shape [N] or [N, 1], not {list(shape)}."
        )
    images = tensor.data
    assert isinstance(images, list)  # noqa: S101 - the codec gives BYTES as a list
    _check_count(len(images), limit)
    return images


def _rows(tensor: InputTensor, host: ModelHost, limit: int) -> list[npt.NDArray[np.float32]]:
    model = host.require_ready()
    expected = model.spec.preprocess.tensor_shape
    if tensor.datatype not in ("FP32", "FP16"):
        raise V2InputError(
            f"Input '{tensor.name}' is {tensor.datatype}; send FP32 or FP16 tensors, or "
            "encoded images as BYTES."
        )
    if tuple(tensor.shape[1:]) != expected or len(tensor.shape) != len(expected) + 1:
        raise V2InputError(
            f"Input '{tensor.name}' has shape {list(tensor.shape)}; the model takes "
            f"[N, {', '.join(map(str, expected))}]."
        )
    data = tensor.data
    assert isinstance(data, np.ndarray)  # noqa: S101 - numeric tensors are arrays
    _check_count(data.shape[0], limit)
    batch = np.array(data, dtype=np.float32)  # writable: a backend may hand it to torch
    return list(batch)


def _check_count(count: int, limit: int) -> None:
    if count < 1:
        raise V2InputError("The request holds no image.")
    if count > limit:
        raise V2InputError(
            f"The request holds {count} images; at most {limit} are accepted "
            "(MAX_IMAGES_PER_REQUEST)."
        )


def _answer(
    request: Request, host: ModelHost, decoded: InferRequest, scored: list[Scored]
) -> Response:
    model = host.require_ready() if host.model is None else host.model
    scores = np.stack([s.confidences for s in scored]).astype(np.float32)
    wanted = decoded.outputs or ()
    outputs: list[OutputTensor] = []
    binary: list[bool] = []
    for output in wanted or [None]:
        name = output.name if output is not None else model.output_name
        if name != model.output_name:
            raise V2InputError(
                f"The model has no output '{name[:64]}'; its output is '{model.output_name}'."
            )
        k = output.classification if output is not None else None
        if k is not None:
            outputs.append(classification_output(name, scores, model.spec.labels, k))
        else:
            outputs.append(OutputTensor(name, "FP32", tuple(scores.shape), scores))
        chosen = output.binary if output is not None else None
        binary.append(decoded.binary_output if chosen is None else chosen)
    body, header_length = encode_infer_response(
        model_name=host.model_name,
        model_version=host.model_version,
        request_id=decoded.id,
        outputs=outputs,
        binary=binary,
    )
    first = scored[0]
    best = int(np.argmax(first.confidences))
    request.scope["state"]["inference"] = InferenceLogFields(
        model_name=host.model_name,
        model_version=host.model_version,
        prediction_class=model.spec.labels[best],
        confidence=float(first.confidences[best]),
        inference_ms=round(first.timings.inference_ms, 3),
        batch_size=first.batch_size,
    )
    headers = {} if header_length is None else {BINARY_HEADER: str(header_length)}
    media_type = "application/json" if header_length is None else "application/octet-stream"
    return Response(body, headers=headers, media_type=media_type)
