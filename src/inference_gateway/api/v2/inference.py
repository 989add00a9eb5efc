"""The Open Inference Protocol's work, whatever the transport: what REST and gRPC share.

The REST routes (`routes.py`) and the gRPC service (`grpc.py`) only convert: each
decodes its request into the codec's `InferRequest`, asks here, and encodes what it
gets. Here are the server's and a model's descriptions (as the protocol's JSON
documents, whose field names the gRPC messages share), and inference: the request's
encoded images or preprocessed tensors through the model version's host, with the same
admission, batching, metrics and spans as ``/predict``, and the outputs to send back.
Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from inference_gateway import __version__
from inference_gateway.api.v2.codec import (
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    V2InputError,
    classification_output,
)
from inference_gateway.config import Settings
from inference_gateway.errors import ExtensionDisabledException
from inference_gateway.inference.control import ModelControl
from inference_gateway.inference.host import ModelHost, Scored
from inference_gateway.inference.model import LoadedModel
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.logging import InferenceLogFields
from inference_gateway.observability.metrics import Metrics, ModelTotals

_T = TypeVar("_T")

#: A request's JSON (or gRPC typed contents) up to this size is decoded on the event
#: loop (well under a millisecond); larger on a thread, so that no request holds the
#: loop while its elements are parsed one by one (a maximum-size JSON body takes about
#: a second). Binary tensor data is read as whole arrays: milliseconds at most.
DECODE_ON_LOOP_BYTES = 64 * 1024

#: What the server always speaks (``GET /v2``, ``ServerMetadata``).
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration")
#: Load parameters Triton takes that would load something other than the repository's
#: files: a configuration or files sent in the request.
FOREIGN_LOAD_PARAMETERS = ("config",)
FOREIGN_LOAD_PREFIX = "file:"


# --- descriptions ------------------------------------------------------------------------
#: The protocol's datatype of each model input type.
INPUT_DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}


def server_metadata(settings: Settings) -> dict[str, object]:
    """Name, version and the protocol extensions the gateway supports: statistics with
    metrics on, the model repository extension with ``ADMIN_TOKEN`` set."""
    extensions = list(EXTENSIONS)
    if settings.enable_metrics:
        extensions.append("statistics")
    if settings.admin_token is not None:
        extensions.append("model_repository")
    return {"name": settings.app_name, "version": __version__, "extensions": extensions}


def model_metadata(registry: ModelRegistry, name: str, version: str | None) -> dict[str, object]:
    """A model version's inputs and outputs as the protocol describes them, and, in
    ``parameters.reload_error``, why its changed files do not serve (the old ones do).

    Raises:
        ModelNotFoundException: No such model or version.
        InferenceGatewayException: The version does not serve now (loading, draining).
    """
    host = registry.resolve(name, version)
    model = host.require_ready()
    spec = model.spec
    statuses = registry.describe(name)[0].versions
    document: dict[str, object] = {
        "name": name,
        "versions": [s.version for s in statuses],
        "platform": "onnxruntime_onnx" if model.backend.name == "onnxruntime" else "pytorch",
        "inputs": [
            {
                "name": model.input_name,
                "datatype": INPUT_DATATYPES[spec.preprocess.input_type],
                "shape": [-1, *spec.preprocess.tensor_shape],
            }
        ],
        "outputs": [
            {"name": model.output_name, "datatype": "FP32", "shape": [-1, len(spec.labels)]}
        ],
    }
    reload_error = next((s.reload_error for s in statuses if s.version == host.model_version), None)
    if reload_error is not None:
        # The schema lets a server add members; `parameters` is the protocol's own
        # word for extras. This version's changed files failed to load (or are retried).
        document["parameters"] = {"reload_error": reload_error}
    return document


def model_config(registry: ModelRegistry, name: str, version: str | None) -> dict[str, object]:
    """Triton's model configuration: what `image_client`-style tools read to preprocess
    on their side (``max_batch_size``, the input's ``format`` and ``dims``).

    Raises:
        ModelNotFoundException: No such model or version.
        InferenceGatewayException: The version does not serve now (loading, draining).
    """
    host = registry.resolve(name, version)
    model = host.require_ready()
    spec = model.spec
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": model.backend.name,
        "max_batch_size": host.batching.max_batch_size,
        "input": [
            {
                "name": model.input_name,
                "data_type": f"TYPE_{INPUT_DATATYPES[spec.preprocess.input_type]}",
                "format": f"FORMAT_{spec.preprocess.layout}",
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


# --- statistics ------------------------------------------------------------------------
async def model_statistics(
    registry: ModelRegistry, metrics: Metrics | None, name: str | None, version: str | None
) -> dict[str, object]:
    """Triton's statistics extension, from the counters the gateway keeps: every served
    version (or the model's versions, or the one version named). The totals are read
    on a thread: with several workers they wait (tens of milliseconds) for every
    worker's values, as a scrape does, which must not stall this worker's requests.

    ``inference_count`` is images answered, ``execution_count`` forward passes;
    ``queue`` and ``compute_infer`` are the time images waited and the forward passes
    ran; ``fail`` counts images whose forward pass failed. What the gateway does not
    keep per model is 0: ``success``'s time (see ``http_request_duration_seconds``),
    ``compute_input``/``compute_output`` (decoding is ``image_preprocess_duration_seconds``,
    shared by the models), ``last_inference``, caches; ``batch_stats`` is empty.

    Raises:
        ExtensionDisabledException: Metrics are off (``ENABLE_METRICS=false``).
        ModelNotFoundException: No such model or version.
    """
    if metrics is None:
        raise ExtensionDisabledException(
            "The statistics extension reads the metrics, which are off (ENABLE_METRICS=false)."
        )
    if name is None:
        keys = registry.served()
    elif version is None:
        registry.resolve(name)  # an unknown model is a 404
        keys = [key for key in registry.served() if key[0] == name]
    else:
        keys = [registry.resolve(name, version).key]
    totals = await asyncio.to_thread(metrics.model_totals, keys)
    return {"model_stats": [_statistics(key, totals[key]) for key in keys]}


def _duration(count: float, seconds: float = 0.0) -> dict[str, int]:
    return {"count": round(count), "ns": round(seconds * 1e9)}


def _statistics(key: tuple[str, str], totals: ModelTotals) -> dict[str, object]:
    return {
        "name": key[0],
        "version": key[1],
        "last_inference": 0,
        "inference_count": round(totals.predictions),
        "execution_count": round(totals.batches),
        "inference_stats": {
            "success": _duration(totals.predictions),
            "fail": _duration(totals.failures),
            "queue": _duration(totals.queue_waits, totals.queue_seconds),
            "compute_input": _duration(0),
            "compute_infer": _duration(totals.batches, totals.inference_seconds),
            "compute_output": _duration(0),
            "cache_hit": _duration(0),
            "cache_miss": _duration(0),
        },
        "batch_stats": [],
    }


# --- the model repository extension ----------------------------------------------------
def repository_index(control: ModelControl, *, ready_only: bool) -> list[dict[str, str]]:
    """Every model of the repository with each version's state (Triton's index): a
    model pinned unloaded is ``UNAVAILABLE`` with the reason ``unloaded``."""
    return [
        {
            "name": entry.name,
            **({"version": entry.version} if entry.version is not None else {}),
            "state": entry.state.value if entry.state is not None else "UNAVAILABLE",
            "reason": entry.reason,
        }
        for entry in control.index(ready_only=ready_only)
    ]


def check_load_parameters(names: Iterable[str]) -> None:
    """Refuse a load that carries its own configuration or files: the gateway loads
    only what its repository directory holds.

    Raises:
        V2InputError: A ``config`` or ``file:`` parameter.
    """
    for name in names:
        if name in FOREIGN_LOAD_PARAMETERS or name.startswith(FOREIGN_LOAD_PREFIX):
            raise V2InputError(
                f"Load parameter {name[:64]!r} is not accepted: the gateway loads models "
                "only from its model repository directory, never from the request."
            )


# --- inference ---------------------------------------------------------------------------
def max_elements(host: ModelHost, settings: Settings) -> int:
    """The most tensor elements one request may carry: ``MAX_IMAGES_PER_REQUEST``
    preprocessed images (a bound checked from the shapes, before tensors are built)."""
    model = host.require_ready()
    return settings.max_images_per_request * int(np.prod(model.spec.preprocess.tensor_shape))


def max_bytes_elements(settings: Settings) -> int:
    """The most ``BYTES`` elements one request may carry: each is one encoded image, and
    the model takes ``[N]`` or ``[N, 1]`` of them with N at most
    ``MAX_IMAGES_PER_REQUEST``. Checked from the shapes, before any element is split out."""
    return settings.max_images_per_request


async def decode(size: int, work: Callable[[], _T]) -> _T:
    """``work()``, a request's decoding whose element-by-element part is ``size`` bytes:
    on the event loop when small, else on a thread (the context, with the trace and log
    fields, goes with it)."""
    if size <= DECODE_ON_LOOP_BYTES:
        return work()
    return await asyncio.to_thread(work)


async def run(
    host: ModelHost, decoded: InferRequest, settings: Settings, deadline: float
) -> list[Scored]:
    """Score every image of the request's one input: encoded images (BYTES), decoded
    with the model's own preprocessing, or tensors the client preprocessed (FP32,
    FP16). Each image is one entry of the batcher; ``deadline`` is a `time.monotonic`
    value.

    Raises:
        V2InputError: Not one input, a datatype or shape the model does not take, or
            more than ``MAX_IMAGES_PER_REQUEST`` images.
        InferenceGatewayException: What scoring raises (a corrupt image, a refusal, a
            timeout, a failed forward pass).
    """
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


def _rows(tensor: InputTensor, host: ModelHost, limit: int) -> list[npt.NDArray[Any]]:
    model = host.require_ready()
    pre = model.spec.preprocess
    expected = pre.tensor_shape
    accepted = ("UINT8",) if pre.input_type == "uint8" else ("FP32", "FP16")
    if tensor.datatype not in accepted:
        raise V2InputError(
            f"Input '{tensor.name}' is {tensor.datatype}; send {' or '.join(accepted)} "
            "tensors, or encoded images as BYTES."
        )
    if tuple(tensor.shape[1:]) != expected or len(tensor.shape) != len(expected) + 1:
        raise V2InputError(
            f"Input '{tensor.name}' has shape {list(tensor.shape)}; the model takes "
            f"[N, {', '.join(map(str, expected))}]."
        )
    data = tensor.data
    assert isinstance(data, np.ndarray)  # noqa: S101 - numeric tensors are arrays
    _check_count(data.shape[0], limit)
    # A copy in the model's input type (writable: a backend may hand it to torch).
    batch = np.array(data, dtype=pre.input_type)
    return list(batch)


def _check_count(count: int, limit: int) -> None:
    if count < 1:
        raise V2InputError("The request holds no image.")
    if count > limit:
        raise V2InputError(
            f"The request holds {count} images; at most {limit} are accepted "
            "(MAX_IMAGES_PER_REQUEST)."
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back for one inference request.

    ``outputs[i]`` answers ``requested[i]``: an output the request named, or None for
    the model's output when it named none. ``log`` is the first image's answer for the
    request's one log line.
    """

    outputs: list[OutputTensor]
    requested: tuple[RequestedOutput | None, ...]
    log: InferenceLogFields


def answer(host: ModelHost, decoded: InferRequest, scored: list[Scored]) -> Answer:
    """The outputs the request asked for: the model's confidences ``[N, classes]``, or
    the classification extension's top classes where an output asks for them.

    Raises:
        V2InputError: The request names an output the model does not have.
    """
    model: LoadedModel = host.require_ready() if host.model is None else host.model
    scores = np.stack([s.confidences for s in scored]).astype(np.float32)
    requested: tuple[RequestedOutput | None, ...] = decoded.outputs or (None,)
    outputs: list[OutputTensor] = []
    for output in requested:
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
    first = scored[0]
    best = int(np.argmax(first.confidences))
    log = InferenceLogFields(
        model_name=host.model_name,
        model_version=host.model_version,
        prediction_class=model.spec.labels[best],
        confidence=float(first.confidences[best]),
        inference_ms=round(first.timings.inference_ms, 3),
        batch_size=first.batch_size,
    )
    return Answer(outputs=outputs, requested=requested, log=log)
