"""The gateway's own endpoints: predictions, models, ``/health``, ``/ready`` (``/metrics``).

Thin: each prediction route names a model (or the default) and a version (or the
highest serving), leases that version from the registry, and formats its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.requests import ClientDisconnect

from golden_signals.tracing import (
    add_span_event,
    create_span,
    get_current_trace_id,
    set_span_attribute,
)
from inference_gateway.api.dependencies import RegistryDep, SettingsDep, TelemetryDep
from inference_gateway.api.keys import ApiKeys
from inference_gateway.api.limits import request_deadline
from inference_gateway.api.multipart import read_file_field
from inference_gateway.api.openapi import problem_responses
from inference_gateway.api.problems import request_id_of
from inference_gateway.api.schemas import (
    ApiKeysOut,
    BatchingOut,
    HealthResponse,
    ImageOut,
    InputOut,
    ModelInfo,
    ModelOut,
    ModelsResponse,
    PredictionOut,
    PredictionResponse,
    QualityOut,
    ReadyResponse,
    ReferenceOut,
    TimingsMs,
    VersionOut,
)
from inference_gateway.config import Settings
from inference_gateway.errors import (
    ClientClosedRequestException,
    UnsupportedMediaTypeException,
)
from inference_gateway.inference.host import Classification, ModelHost, Quality
from inference_gateway.inference.model import LoadedModel
from inference_gateway.inference.quality import CONTINUOUS, Reference
from inference_gateway.inference.registry import ModelRegistry, ModelStatus
from inference_gateway.observability.logging import InferenceLogFields
from inference_gateway.observability.telemetry import Telemetry

router = APIRouter()

RAW_CONTENT_TYPES = ("application/octet-stream",)

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image_bytes(request: Request, max_fields: int) -> bytes:
    """The uploaded image: multipart field ``file``, or the raw body of an image type.

    The body-size limit applies while this streams (see `BodySizeLimitMiddleware`). A
    client that goes away mid-upload is a 499, not a server error.
    """
    media_type = _media_type(request)
    try:
        if media_type == "multipart/form-data":
            content_type = request.headers.get("content-type", "")
            return await read_file_field(request.stream(), content_type, "file", max_fields)
        if media_type.startswith("image/") or media_type in RAW_CONTENT_TYPES:
            return await request.body()
    except ClientDisconnect:
        raise ClientClosedRequestException("The client disconnected during the upload.") from None
    shown = media_type[:100] or "none"
    raise UnsupportedMediaTypeException(
        f"Content type {shown!r} is not accepted; send multipart/form-data with a 'file' "
        "field, or the image bytes with an image/* or application/octet-stream type."
    )


async def _unless_disconnected(
    request: Request, work: Coroutine[Any, Any, Classification]
) -> Classification:
    """Await ``work``, abandoning it if the client disconnects first.

    The body has been read, so the next ``receive`` only returns when the client goes
    away; abandoning the work removes the request from the batcher's queue unrun.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    add_span_event("client.disconnected", {"request.abandoned": True})
    raise ClientClosedRequestException("The client disconnected before the answer.")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(name=model.spec.name, version=model.spec.version, backend=model.backend.name)


TopK = Annotated[int | None, Query(ge=1, le=20, description="How many classes")]
#: Asked for, not sent by default: an answer's signals measured on their own, at once,
#: cost about 5% of an image's server CPU (`bench/quality_cost.py`), where the counters
#: measure many answers together; the metrics, exemplars and kept traces are there
#: either way.
WithQuality = Annotated[
    bool,
    Query(
        alias="quality",
        description="Add `quality`: how typical the image and the answer are of the "
        "version's reference (versions with a `reference.json` only).",
    ),
]
_PREDICT_DOC = {
    "response_model": PredictionResponse,
    # 413, 408 and the rest of the body limits' statuses: `install_openapi`.
    "responses": problem_responses(400, 404, 415, 422, 500, 503, 504),
    "openapi_extra": _PREDICT_BODY,
}


@dataclass(frozen=True, slots=True)
class PredictCall:
    """What every prediction route needs, gathered once by FastAPI's dependencies."""

    request: Request
    response: Response
    settings: Settings
    registry: ModelRegistry
    telemetry: Telemetry
    top_k: int | None
    with_quality: bool = False

    async def run(self, name: str | None, version: str | None) -> PredictionResponse:
        """Lease the model version and answer with it."""
        started = time.perf_counter()
        async with self.registry.lease(name, version) as host:
            # For the access line, whatever happens next.
            self.request.scope["state"]["model"] = host.key
            return await _predict_with(
                self.request, self.response, self.settings, host, self.telemetry,
                self.top_k, self.with_quality, started,
            )  # fmt: skip


async def _predict_call(
    request: Request,
    response: Response,
    settings: SettingsDep,
    registry: RegistryDep,
    telemetry: TelemetryDep,
    top_k: TopK = None,
    with_quality: WithQuality = False,
) -> PredictCall:
    return PredictCall(request, response, settings, registry, telemetry, top_k, with_quality)


PredictDep = Annotated[PredictCall, Depends(_predict_call)]


@router.post("/predict", summary="Classify an image with the default model", **_PREDICT_DOC)  # type: ignore[arg-type]
async def predict(call: PredictDep) -> PredictionResponse:
    """Classify one image (multipart ``file`` field or raw image body) with the default
    model (``DEFAULT_MODEL``, or the only one).

    The response lists the ``top_k`` most likely classes with their confidences, and
    where the time went (also sent as a ``Server-Timing`` header); with
    ``quality=true``, how typical the image and the answer are of the version's
    model-quality reference.
    """
    return await call.run(None, None)


@router.post("/models/{name}/predict", summary="Classify an image with a model", **_PREDICT_DOC)  # type: ignore[arg-type]
async def predict_model(name: str, call: PredictDep) -> PredictionResponse:
    """`predict` with the named model, at its highest version that is serving."""
    return await call.run(name, None)


@router.post(
    "/models/{name}/versions/{version}/predict",
    summary="Classify an image with one version of a model",
    **_PREDICT_DOC,  # type: ignore[arg-type]
)
async def predict_version(name: str, version: str, call: PredictDep) -> PredictionResponse:
    """`predict` with one version of the named model."""
    return await call.run(name, version)


async def _predict_with(
    request: Request,
    response: Response,
    settings: Settings,
    host: ModelHost,
    telemetry: Telemetry,
    top_k: int | None,
    with_quality: bool,
    started: float,
) -> PredictionResponse:
    with create_span(telemetry.tracer, "validate_input"):
        model = host.require_ready()
        deadline = request_deadline(request, settings)
        host.check_admission(deadline)  # shed load before reading the upload
        data = await read_image_bytes(request, settings.max_multipart_fields)
        set_span_attribute("image.bytes", len(data))
    result = await _unless_disconnected(
        request, host.classify(data, top_k or settings.top_k_default, deadline)
    )
    with create_span(telemetry.tracer, "format_response"):
        total_ms = (time.perf_counter() - started) * 1000
        t = result.timings
        best = result.predictions[0]
        # The access log line of this request becomes "Inference completed" with these.
        request.scope["state"]["inference"] = InferenceLogFields(
            model_name=model.spec.name,
            model_version=model.spec.version,
            prediction_class=best.label,
            confidence=best.confidence,
            inference_ms=round(t.inference_ms, 3),
            batch_size=result.batch_size,
        )
        response.headers["Server-Timing"] = (
            f"preprocess;dur={t.preprocess_ms:.3f}, queue;dur={t.queue_ms:.3f}, "
            f"inference;dur={t.inference_ms:.3f}, total;dur={total_ms:.3f}"
        )
        return PredictionResponse(
            model=_model_info(model),
            predictions=[
                PredictionOut(class_id=p.class_id, label=p.label, confidence=p.confidence)
                for p in result.predictions
            ],
            image=ImageOut(
                format=result.image.format,
                width=result.image.width,
                height=result.image.height,
                size_bytes=result.image.size_bytes,
            ),
            request_id=request_id_of(request) or "",
            trace_id=get_current_trace_id(),
            timings_ms=TimingsMs(
                preprocess=round(t.preprocess_ms, 3),
                queue=round(t.queue_ms, 3),
                inference=round(t.inference_ms, 3),
                total=round(total_ms, 3),
            ),
            quality=_quality_out(result.quality) if with_quality else None,
        )


def _quality_out(quality: Quality | None) -> QualityOut | None:
    """Where this answer's signals fall in the version's reference."""
    if quality is None:
        return None
    reference, observation = quality.reference, quality.observed()
    signals = {}
    for signal in CONTINUOUS:
        value = observation.value(signal)
        if isinstance(value, float | int):
            signals[signal] = {
                "value": round(float(value), 4),
                "reference_percentile": round(100 * reference.rank(signal, float(value)), 1),
            }
    # One validation of plain data (pydantic-core) costs a fifth of building each
    # nested model with `model_construct`.
    return QualityOut.model_validate(
        {
            "reference_images": reference.images,
            "class_in_reference": observation.label in reference.seen_classes,
            "low_confidence": quality.unusual,
            "signals": signals,
        }
    )


@router.get(
    "/health", response_model=HealthResponse, responses=problem_responses(503), summary="Liveness"
)
async def health(registry: RegistryDep) -> HealthResponse:
    """200 while the process can serve (it never waits on a model); 503 once a model's
    worker has given up for good, so a supervisor restarts the process."""
    registry.check_live()
    return HealthResponse(status="ok")


@router.get(
    "/ready", response_model=ReadyResponse, responses=problem_responses(503), summary="Readiness"
)
async def ready(request: Request, registry: RegistryDep) -> ReadyResponse:
    """200 once every model has a loaded, warm version; 503 before that (the problem's
    ``models`` lists each model's state), while draining, and while a forward pass has
    been stuck for over ``MODEL_STALL_SECONDS``. With ``API_KEYS_FILE``, the keys
    file's state too (a broken change keeps the old keys: said here, not a 503)."""
    host = registry.check_ready()
    model = host.model if host is not None else None
    keys: ApiKeys | None = request.app.state.api_keys
    return ReadyResponse(
        status="ready",
        model=_model_info(model) if model is not None else None,
        models=[_model_out(status) for status in registry.describe()],
        api_keys=ApiKeysOut(**asdict(keys.state())) if keys is not None else None,
    )


@router.get("/models", response_model=ModelsResponse, summary="Every model and its versions")
async def list_models(registry: RegistryDep) -> ModelsResponse:
    """Each model the gateway knows: its state, its versions, their input size, label
    count and batching; broken ones with the reason."""
    return ModelsResponse(
        default_model=registry.default_model,
        models=[_model_out(status) for status in registry.describe()],
    )


@router.get(
    "/models/{name}",
    response_model=ModelOut,
    responses=problem_responses(404, 503),
    summary="One model and its versions",
)
async def get_model(name: str, registry: RegistryDep) -> ModelOut:
    """One model as ``GET /models`` shows it; 404 ``model-not-found`` if there is none."""
    if name not in registry.names():
        registry.resolve(name)  # raises the 404 with the names that exist
    return _model_out(registry.describe(name)[0])


def _reference_out(reference: Reference | None, error: str | None) -> ReferenceOut | None:
    if reference is not None:
        return ReferenceOut(
            sha256=reference.sha256, images=reference.images, created=reference.created or None
        )
    return ReferenceOut(error=error) if error is not None else None


def _model_out(status: ModelStatus) -> ModelOut:
    versions = []
    for v in status.versions:
        spec = v.spec
        width, height = spec.preprocess.output_size if spec is not None else (0, 0)
        versions.append(
            VersionOut(
                version=v.version,
                state=v.state.value,
                reason=v.reason,
                reload_error=v.reload_error,
                reference=_reference_out(v.reference, v.reference_error),
                backend=v.backend,
                input=InputOut(
                    width=width,
                    height=height,
                    layout=spec.preprocess.layout,
                    color=spec.preprocess.color,
                )
                if spec is not None
                else None,
                labels=len(spec.labels) if spec is not None else None,
                batching=BatchingOut(
                    max_batch_size=v.batching.max_batch_size,
                    max_batch_delay_ms=v.batching.max_batch_delay_seconds * 1000,
                    max_queue_size=v.batching.max_queue_size,
                ),
            )
        )
    return ModelOut(
        name=status.name,
        state=status.state.value,
        reason=status.reason,
        default_version=status.default_version,
        versions=versions,
    )


async def metrics_endpoint(
    request: Request, telemetry: TelemetryDep, registry: RegistryDep
) -> Response:
    """Prometheus exposition (OpenMetrics with exemplars when the scraper asks)."""
    assert telemetry.metrics is not None  # noqa: S101 - route exists only with metrics on
    registry.flush_signals()  # every answer this process gave, counted
    # On a thread: with several workers the scrape waits (tens of milliseconds) for
    # every worker's values, which must not stall this worker's requests.
    body, content_type = await asyncio.to_thread(
        telemetry.metrics.render, request.headers.get("accept")
    )
    return Response(body, media_type=content_type)
