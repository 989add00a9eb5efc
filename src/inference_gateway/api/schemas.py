"""Response schemas of the API, as OpenAPI shows them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelInfo(BaseModel):
    """Which model answered."""

    name: str = Field(examples=["efficientnet-lite0"])
    version: str = Field(examples=["1"])
    backend: str = Field(examples=["onnxruntime"])


class PredictionOut(BaseModel):
    """One ranked class."""

    class_id: int = Field(ge=0, examples=[281])
    label: str = Field(examples=["tabby"])
    confidence: float = Field(ge=0, le=1, examples=[0.62])


class TimingsMs(BaseModel):
    """Where the request's time went, in milliseconds (also in ``Server-Timing``)."""

    preprocess: float = Field(examples=[2.1])
    queue: float = Field(examples=[0.2])
    inference: float = Field(examples=[9.8])
    total: float = Field(examples=[13.4])


class ImageOut(BaseModel):
    """What the gateway saw in the upload."""

    format: str = Field(examples=["jpeg"])
    width: int = Field(examples=[451])
    height: int = Field(examples=[300])
    size_bytes: int = Field(examples=[48213])


class PredictionResponse(BaseModel):
    """The answer to ``POST /predict``."""

    model_config = ConfigDict(protected_namespaces=())

    model: ModelInfo
    predictions: list[PredictionOut]
    image: ImageOut
    request_id: str = Field(examples=["7f1c7a5e-3d1b-4b8e-9a55-0c1b2f3e4d5a"])
    trace_id: str | None = Field(examples=["4bf92f3577b34da6a3ce929d0e0e4736"])
    timings_ms: TimingsMs


class HealthResponse(BaseModel):
    """Liveness: the process serves HTTP."""

    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    """Readiness: the model is loaded and warm."""

    model_config = ConfigDict(protected_namespaces=())

    status: str = Field(examples=["ready"])
    model: ModelInfo


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str = Field(examples=["urn:inference-gateway:problem:invalid-image"])
    title: str = Field(examples=["Invalid image"])
    status: int = Field(examples=[400])
    detail: str = Field(examples=["The image data is truncated."])
    request_id: str | None = None
    reason: str | None = Field(None, description="Machine-readable refusal reason (503, 413, 504).")
