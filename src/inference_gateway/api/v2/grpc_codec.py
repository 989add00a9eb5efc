"""The Open Inference Protocol's gRPC messages as pure functions: protobuf in, tensors out.

Converts the messages of the service definition that tritonclient ships
(``tritonclient.grpc.service_pb2``) to and from the codec's types, the way Triton and
``tritonclient.grpc`` use them. Inputs come in ``raw_input_contents`` (the client's
default; each laid out as the binary data extension lays out a tensor, BYTES elements
with 4-byte little-endian length prefixes) or as typed ``contents``; outputs always go
in ``raw_output_contents``, the only place ``tritonclient.grpc`` reads them; the
classification extension is an output's ``classification`` parameter. Descriptions
are the REST documents parsed into their messages: the protocol names the fields alike.
Also here: the gRPC status code of each kind of failure. Importing this module needs
the ``grpc`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

from inference_gateway.api.v2.codec import (
    DATATYPES,
    ElementBudget,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    V2InputError,
    decode_raw_input,
    decode_typed_input,
    raw_output_bytes,
)
from inference_gateway.errors import ErrorKind, InferenceGatewayException

#: The status code of each kind of failure. A refusal to protect the service (a full
#: queue, a deadline the queue cannot meet, uploads over the memory budget) is
#: RESOURCE_EXHAUSTED, which tells "back off" apart from UNAVAILABLE's "not serving
#: now, go elsewhere" (loading, draining, failed). Triton answers a full queue with
#: UNAVAILABLE: a client that retries only that should add RESOURCE_EXHAUSTED.
STATUS_BY_KIND: Mapping[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.REFUSED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
}

#: The typed ``contents`` field of each datatype (as Triton reads them). FP16 and BF16
#: have none: they come only in ``raw_input_contents``.
CONTENTS_FIELDS: Mapping[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def status_code(exc: InferenceGatewayException) -> grpc.StatusCode:
    """The gRPC status code that answers ``exc``."""
    return STATUS_BY_KIND[exc.kind]


def typed_contents_bytes(message: Any) -> int:
    """About how many bytes a ``ModelInferRequest``'s typed contents hold, in constant
    time per input: what decoding walks element by element (raw contents are read as
    one array each; ``ByteSize()`` would walk the whole message)."""
    size = 0
    for item in message.inputs:
        field = CONTENTS_FIELDS.get(item.datatype)
        if field is not None:
            size += 4 * len(getattr(item.contents, field))
    return size


def payload_bytes(message: Any, max_bytes_elements: int) -> int:
    """About how many bytes a ``ModelInferRequest``'s tensors hold, in constant time per
    input (BYTES contents measured only when no more than ``max_bytes_elements``: more
    are refused by decoding, and 4 bytes each stand for them)."""
    size = sum(map(len, message.raw_input_contents)) + typed_contents_bytes(message)
    for item in message.inputs:
        elements = item.contents.bytes_contents
        if 0 < len(elements) <= max_bytes_elements:
            size += sum(map(len, elements))
    return size


def decode_infer_request(
    message: Any, *, max_elements: int, max_bytes_elements: int | None = None
) -> InferRequest:
    """A ``ModelInferRequest`` as the codec's `InferRequest` (model name and version
    are the caller's to read).

    Args:
        message: The ``service_pb2.ModelInferRequest``.
        max_elements: The most tensor elements all inputs may hold together, checked
            from the shapes before any tensor is built.
        max_bytes_elements: The most ``BYTES`` elements among them (default:
            ``max_elements``).

    Raises:
        V2InputError: Anything in the message that does not add up.
    """
    if not message.inputs:
        raise V2InputError("The request has no inputs; it must list its input tensors.")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise V2InputError(
            f"The request has {len(message.inputs)} inputs but {len(raw)} "
            "raw_input_contents; give one per input, in order (or none, and typed contents)."
        )
    budget = ElementBudget(max_elements, max_bytes_elements)
    inputs: list[InputTensor] = []
    for position, item in enumerate(message.inputs):
        label = f"Input {item.name[:64]!r}"
        if "shared_memory_region" in item.parameters:
            raise V2InputError(f"{label} asks for shared memory, which this server does not offer.")
        if raw:
            if item.HasField("contents"):
                raise V2InputError(
                    f"{label} has typed contents, but the request carries its inputs in "
                    "raw_input_contents; it must use one or the other."
                )
            tensor = decode_raw_input(
                item.name, item.datatype, item.shape, raw[position],
                position=position, budget=budget,
            )  # fmt: skip
        else:
            tensor = _typed_input(item, position, budget)
        if any(seen.name == tensor.name for seen in inputs):
            raise V2InputError(f"{label} appears more than once in inputs.")
        inputs.append(tensor)
    return InferRequest(
        id=message.id or None,
        inputs=tuple(inputs),
        outputs=_requested_outputs(message.outputs),
        binary_output=True,  # gRPC carries every output as raw bytes
    )


def _typed_input(item: Any, position: int, budget: ElementBudget) -> InputTensor:
    label = f"Input {item.name[:64]!r}"
    field = CONTENTS_FIELDS.get(item.datatype)
    if field is None:
        if item.datatype in DATATYPES:
            raise V2InputError(
                f"{label} is {item.datatype}, which typed contents cannot carry; send it in "
                "raw_input_contents."
            )
        values: Sequence[Any] = []  # an unknown datatype: the codec says so
    else:
        present = {descriptor.name for descriptor, _ in item.contents.ListFields()}
        others = present - {field}
        if others:
            raise V2InputError(
                f"{label} is {item.datatype}, but its contents set "
                f"{', '.join(sorted(others))}; {item.datatype} goes in {field}."
            )
        values = getattr(item.contents, field)  # copied once the shape is checked
    return decode_typed_input(
        item.name, item.datatype, item.shape, values, position=position, budget=budget
    )


def _requested_outputs(items: Sequence[Any]) -> tuple[RequestedOutput, ...]:
    outputs: list[RequestedOutput] = []
    for position, item in enumerate(items):
        if not item.name:
            raise V2InputError(f"outputs[{position}] needs a non-empty 'name'.")
        label = f"Output {item.name[:64]!r}"
        if any(seen.name == item.name for seen in outputs):
            raise V2InputError(f"{label} is requested more than once.")
        if "shared_memory_region" in item.parameters:
            raise V2InputError(f"{label} asks for shared memory, which this server does not offer.")
        classification = None
        if "classification" in item.parameters:
            parameter = item.parameters["classification"]
            choice = parameter.WhichOneof("parameter_choice")
            value = getattr(parameter, choice) if choice in ("int64_param", "uint64_param") else -1
            if value < 0:
                raise V2InputError(
                    f"{label}: classification must be a non-negative integer class count."
                )
            classification = int(value) or None  # 0 asks for none, as in Triton
        outputs.append(RequestedOutput(name=item.name, binary=None, classification=classification))
    return tuple(outputs)


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
) -> Any:
    """A ``ModelInferResponse`` with every output's data in ``raw_output_contents``.

    Raises:
        ValueError: An output's data does not match its datatype or shape (a bug).
    """
    response = service_pb2.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(raw_output_bytes(tensor).tobytes())
    return response


def server_metadata_response(document: Mapping[str, object]) -> Any:
    """The ``ServerMetadataResponse`` of the REST document (`inference.server_metadata`)."""
    return json_format.ParseDict(document, service_pb2.ServerMetadataResponse())


def model_metadata_response(document: Mapping[str, object]) -> Any:
    """The ``ModelMetadataResponse`` of the REST document (`inference.model_metadata`),
    less its ``parameters``: the message has no such field (``GET /models`` shows them)."""
    fields = {key: value for key, value in document.items() if key != "parameters"}
    return json_format.ParseDict(fields, service_pb2.ModelMetadataResponse())


def model_config_response(document: Mapping[str, object]) -> Any:
    """The ``ModelConfigResponse`` of the REST document (`inference.model_config`): the
    names of its enums (``TYPE_FP32``, ``FORMAT_NCHW``) are the protobuf's own."""
    config = json_format.ParseDict(document, model_config_pb2.ModelConfig())
    return service_pb2.ModelConfigResponse(config=config)


def model_statistics_response(document: Mapping[str, object]) -> Any:
    """The ``ModelStatisticsResponse`` of the REST document (`inference.model_statistics`)."""
    return json_format.ParseDict(document, service_pb2.ModelStatisticsResponse())


def repository_index_response(models: Sequence[Mapping[str, str]]) -> Any:
    """The ``RepositoryIndexResponse`` of the REST index (`inference.repository_index`)."""
    return json_format.ParseDict({"models": list(models)}, service_pb2.RepositoryIndexResponse())
