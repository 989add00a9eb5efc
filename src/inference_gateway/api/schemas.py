"""Request and response schemas of the API, as OpenAPI shows them."""

from __future__ import annotations

from typing import Any

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


class SignalOut(BaseModel):
    """One continuous signal of this answer, placed in the version's reference."""

    value: float = Field(examples=[41.7])
    reference_percentile: float = Field(
        ge=0,
        le=100,
        examples=[4.0],
        description="The share of the reference images with a lower value, in percent "
        "(4: darker than 96% of them, for luminance).",
    )


class QualityOut(BaseModel):
    """How typical this image and this answer are of the version's reference (present
    only for versions with a ``reference.json``)."""

    reference_images: int = Field(examples=[800])
    class_in_reference: bool = Field(
        description="Whether the reference's images were ever given this class."
    )
    low_confidence: bool = Field(
        description="Top-1 confidence below the reference's 5th percentile (its trace is kept)."
    )
    signals: dict[str, SignalOut] = Field(
        description="Each continuous signal: confidence, margin, entropy, luminance, "
        "contrast, pixels, aspect_ratio, saturation, sharpness, jpeg_quality."
    )


class PredictionResponse(BaseModel):
    """The answer to ``POST /predict``."""

    model_config = ConfigDict(protected_namespaces=())

    model: ModelInfo
    predictions: list[PredictionOut]
    image: ImageOut
    request_id: str = Field(examples=["7f1c7a5e-3d1b-4b8e-9a55-0c1b2f3e4d5a"])
    trace_id: str | None = Field(examples=["4bf92f3577b34da6a3ce929d0e0e4736"])
    timings_ms: TimingsMs
    quality: QualityOut | None = Field(
        None,
        description="Against the version's reference, when asked for with `quality=true` "
        "(absent otherwise, and for versions without a reference).",
    )


class HealthResponse(BaseModel):
    """Liveness: the process serves HTTP."""

    status: str = Field(examples=["ok"])


class InputOut(BaseModel):
    """The image tensor a model takes: size, layout and colour order."""

    width: int = Field(examples=[224])
    height: int = Field(examples=[224])
    layout: str = Field(examples=["NCHW"])
    color: str = Field(examples=["RGB"])


class BatchingOut(BaseModel):
    """How requests to a model version are batched and queued."""

    max_batch_size: int = Field(examples=[4])
    max_batch_delay_ms: float = Field(examples=[0.0])
    max_queue_size: int = Field(examples=[64])


class ReferenceOut(BaseModel):
    """A version's model-quality reference: on (``sha256``, ``images``) or off (``error``)."""

    sha256: str | None = Field(None, description="The reference file's SHA-256 (signals on).")
    images: int | None = Field(None, examples=[800])
    created: str | None = Field(None, examples=["2026-12-06T15:08:09+00:00"])
    error: str | None = Field(
        None, description="Why its reference.json is not used (the version still serves)."
    )


class VersionOut(BaseModel):
    """One version of a model and where it is in its life."""

    version: str = Field(examples=["1"])
    state: str = Field(examples=["READY"], description="LOADING, READY, UNAVAILABLE, UNLOADING")
    reason: str | None = Field(None, description="Why it is not serving, when it is not.")
    reload_error: str | None = Field(
        None,
        description=(
            "Its files changed and the new ones failed to load, or fail and are retried "
            "(the last error, the attempts, the next try); the old ones serve."
        ),
    )
    backend: str | None = Field(None, examples=["onnxruntime"])
    input: InputOut | None = None
    labels: int | None = Field(None, examples=[1000], description="How many classes it scores.")
    batching: BatchingOut
    reference: ReferenceOut | None = Field(
        None,
        description="Its model-quality reference (`inference-gateway profile`); absent "
        "when it has none.",
    )


class ModelOut(BaseModel):
    """A model, its state and its versions (``GET /models``)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(examples=["efficientnet-lite0"])
    state: str = Field(examples=["READY"])
    reason: str | None = None
    default_version: str | None = Field(
        None, examples=["1"], description="The highest version that is serving."
    )
    versions: list[VersionOut]


class ModelsResponse(BaseModel):
    """Every model the gateway knows."""

    default_model: str | None = Field(None, examples=["efficientnet-lite0"])
    models: list[ModelOut]


class ApiKeysOut(BaseModel):
    """The API keys file in force (never a key, nor the file's path)."""

    loaded_at: str = Field(description="When the keys in force were read (ISO 8601, UTC).")
    keys: int = Field(description="How many keys are in force.")
    error: str | None = Field(
        None,
        description="Why a later change of the file could not be read: the keys last "
        "read stay in force until a good version is read.",
    )
    error_since: str | None = None


class ReadyResponse(BaseModel):
    """Readiness: every model has a warm version serving."""

    model_config = ConfigDict(protected_namespaces=())

    status: str = Field(examples=["ready"])
    model: ModelInfo | None = Field(None, description="What answers POST /predict.")
    models: list[ModelOut]
    api_keys: ApiKeysOut | None = Field(None, description="With API_KEYS_FILE set: its state.")


class ValidationIssue(BaseModel):
    """One parameter that failed validation: where it is and what is wrong."""

    loc: list[str] = Field(examples=[["query", "top_k"]])
    msg: str = Field(examples=["Input should be less than or equal to 20"])


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str = Field(examples=["urn:inference-gateway:problem:invalid-image"])
    title: str = Field(examples=["Invalid image"])
    status: int = Field(examples=[400])
    detail: str = Field(examples=["The image data is truncated."])
    request_id: str | None = None
    reason: str | None = Field(None, description="Machine-readable refusal reason (503, 413, 504).")
    errors: list[ValidationIssue] | None = Field(
        None, description="Each parameter that failed validation (422)."
    )


class ProtocolError(BaseModel):
    """The Open Inference Protocol's error body (``/v2``), as its clients parse it."""

    error: str = Field(examples=["There is no model 'resnet'; models: efficientnet-lite0."])


class InferInput(BaseModel):
    """One input tensor of an inference request: its values in ``data``, or (binary data
    extension) ``parameters.binary_data_size`` bytes after the JSON header."""

    name: str = Field(examples=["input"])
    shape: list[int] = Field(examples=[[1]])
    datatype: str = Field(
        examples=["BYTES"],
        description="BYTES (encoded images), FP32 or FP16 (preprocessed tensors), ...",
    )
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        None, description='Row-major values; a BYTES element is a string or {"b64": "..."}.'
    )


class InferOutputRequest(BaseModel):
    """An output the client wants, and how (``binary_data``, ``classification``)."""

    name: str = Field(examples=["logits"])
    parameters: dict[str, Any] | None = None


class InferRequestBody(BaseModel):
    """An inference request (the JSON part, with the binary data extension)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput]
    outputs: list[InferOutputRequest] | None = None


class RepositoryRequestBody(BaseModel):
    """A model repository request: empty, or ``ready`` (index), ``repository_name`` and
    ``parameters`` (load, unload)."""

    ready: bool | None = Field(None, description="Index: list only the ready versions.")
    repository_name: str | None = None
    parameters: dict[str, Any] | None = None
