"""The gRPC codec, proven against what ``tritonclient.grpc`` sends and reads: requests it
builds decode to the same tensors, responses it parses hold the tensors encoded, every
malformed message is refused with a message that says why, and every kind of failure
has its status code."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import deserialize_bytes_tensor

from inference_gateway.api.v2.codec import OutputTensor, V2InputError, classification_output
from inference_gateway.api.v2.grpc_codec import (
    STATUS_BY_KIND,
    decode_infer_request,
    encode_infer_response,
    model_config_response,
    model_metadata_response,
    server_metadata_response,
    status_code,
)
from inference_gateway.errors import (
    ClientClosedRequestException,
    DeadlineUnreachableException,
    ErrorKind,
    ImageTooLargeException,
    InferenceGatewayException,
    InferenceTimeoutException,
    InflightBytesException,
    InvalidInputException,
    ModelFailedException,
    ModelInferenceException,
    ModelNotFoundException,
    ModelNotLoadedException,
    PayloadTooLargeException,
    QueueFullException,
    ServiceDrainingException,
)

LIMIT = 1_000_000
Code = grpc.StatusCode


def client_message(
    arrays: dict[str, np.ndarray],
    *,
    outputs: list[grpcclient.InferRequestedOutput] | None = None,
    request_id: str = "",
) -> Any:
    """The ``ModelInferRequest`` tritonclient.grpc sends for ``arrays`` (raw contents)."""
    inputs = []
    for name, array in arrays.items():
        datatype = (
            "BYTES" if array.dtype == np.object_ else grpcclient.np_to_triton_dtype(array.dtype)
        )
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return _get_inference_request(
        model_name="m", inputs=inputs, model_version="", request_id=request_id, outputs=outputs,
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
        parameters=None,
    )  # fmt: skip


def typed_message(datatype: str, shape: list[int], field: str, values: list[Any]) -> Any:
    """A request with one input in typed ``contents`` (what KServe-style clients send)."""
    message = service_pb2.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return message


def decode(message: Any, limit: int = LIMIT) -> Any:
    return decode_infer_request(message, max_elements=limit)


def prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# --- Status codes ------------------------------------------------------------------------


def test_every_kind_of_failure_has_a_status_code() -> None:
    assert set(STATUS_BY_KIND) == set(ErrorKind)


#: Each status code with the gateway errors it answers.
EXAMPLES: dict[grpc.StatusCode, tuple[type[InferenceGatewayException], ...]] = {
    Code.INVALID_ARGUMENT: (InvalidInputException, ImageTooLargeException, V2InputError),
    Code.NOT_FOUND: (ModelNotFoundException,),
    Code.UNAVAILABLE: (ModelNotLoadedException, ServiceDrainingException, ModelFailedException),
    Code.RESOURCE_EXHAUSTED: (
        QueueFullException,
        DeadlineUnreachableException,
        InflightBytesException,
        PayloadTooLargeException,
    ),
    Code.DEADLINE_EXCEEDED: (InferenceTimeoutException,),
    Code.CANCELLED: (ClientClosedRequestException,),
    Code.INTERNAL: (ModelInferenceException, InferenceGatewayException),
}


@pytest.mark.parametrize(
    ("error", "code"),
    [(error, code) for code, errors in EXAMPLES.items() for error in errors],
    ids=lambda value: value.__name__ if isinstance(value, type) else value.name,
)
def test_each_gateway_error_maps_to_the_status_code_of_its_kind(
    error: type[InferenceGatewayException], code: grpc.StatusCode
) -> None:
    assert status_code(error("detail")) is code


# --- Requests the client library builds decode to the tensors it was given ----------------

RNG = np.random.default_rng(11)
NUMERIC_CASES = {
    "FP32 [2,3,4,4]": RNG.standard_normal((2, 3, 4, 4)).astype(np.float32),
    "FP16 [2,3]": RNG.standard_normal((2, 3)).astype(np.float16),
    "INT64 [3,2]": np.array([[-(2**62), 0], [1, 2**62], [-5, 7]], dtype=np.int64),
    "UINT8 [2,2]": np.array([[0, 255], [17, 3]], dtype=np.uint8),
}


@pytest.mark.parametrize("array", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_raw_numeric_tensor_from_the_client_decodes_to_the_same_array(array: np.ndarray) -> None:
    decoded = decode(client_message({"x": array}, request_id="req-1"))
    (tensor,) = decoded.inputs
    assert decoded.id == "req-1"
    assert (tensor.name, tensor.shape) == ("x", array.shape)
    assert isinstance(tensor.data, np.ndarray) and tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.data, array)
    assert not tensor.data.flags.writeable


def test_raw_bytes_elements_from_the_client_decode_to_the_same_bytes() -> None:
    elements = [b"\x89PNG\r\n\x1a\n\x00\x00", b"", b"\xff\xd8" * 300]
    decoded = decode(client_message({"images": np.array(elements, dtype=np.object_)}))
    (tensor,) = decoded.inputs
    assert (tensor.datatype, tensor.shape, tensor.data) == ("BYTES", (3,), elements)


def test_a_request_without_id_or_outputs_asks_for_every_output() -> None:
    decoded = decode(client_message({"x": np.zeros((1, 2), np.float32)}))
    assert decoded.id is None and decoded.outputs == ()


def test_class_count_asks_for_the_classification_extension() -> None:
    outputs = [
        grpcclient.InferRequestedOutput("top", class_count=3),
        grpcclient.InferRequestedOutput("plain"),
        grpcclient.InferRequestedOutput("none", class_count=0),
    ]
    decoded = decode(client_message({"x": np.zeros((1, 2), np.float32)}, outputs=outputs))
    assert [(o.name, o.classification) for o in decoded.outputs] == [
        ("top", 3),
        ("plain", None),
        ("none", None),  # 0 asks for none, as in Triton
    ]


def test_typed_fp32_contents_decode_to_an_array_of_the_shape() -> None:
    values = [0.5, -1.25, 3.0, 0.0, 2.5, -0.75]
    (tensor,) = decode(typed_message("FP32", [2, 3], "fp32_contents", values)).inputs
    assert isinstance(tensor.data, np.ndarray) and tensor.data.dtype == np.float32
    np.testing.assert_array_equal(tensor.data, np.array(values, np.float32).reshape(2, 3))


def test_typed_bytes_contents_decode_to_the_same_bytes() -> None:
    images = [b"first image", b"\x00second\x00"]
    (tensor,) = decode(typed_message("BYTES", [2], "bytes_contents", images)).inputs
    assert tensor.data == images


def test_typed_integer_contents_decode_by_datatype() -> None:
    (tensor,) = decode(typed_message("INT32", [3], "int_contents", [-7, 0, 7])).inputs
    assert isinstance(tensor.data, np.ndarray) and tensor.data.dtype == np.int32
    assert tensor.data.tolist() == [-7, 0, 7]


# --- Malformed messages are refused with a message that says why ---------------------------


def _two_raw_for_one_input() -> Any:
    message = client_message({"x": np.zeros(2, np.float32)})
    message.raw_input_contents.append(b"\x00" * 8)
    return message


def _raw_and_typed() -> Any:
    message = client_message({"x": np.zeros(2, np.float32)})
    message.inputs[0].contents.fp32_contents.extend([0.0, 0.0])
    return message


def _raw_size_off() -> Any:
    message = client_message({"x": np.zeros(2, np.float32)})
    message.raw_input_contents[0] = b"\x00" * 7
    return message


def _raw_bytes_prefix_cut() -> Any:
    message = client_message({"x": np.array([b"abc"], dtype=np.object_)})
    message.raw_input_contents[0] = prefixed(b"abc")[:-1]
    return message


def _duplicate_input() -> Any:
    message = typed_message("FP32", [1], "fp32_contents", [1.0])
    message.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(2.0)
    return message


def _shared_memory_input() -> Any:
    message = typed_message("FP32", [1], "fp32_contents", [1.0])
    message.inputs[0].parameters["shared_memory_region"].string_param = "region"
    return message


def _with_output(configure: Callable[[Any], None]) -> Callable[[], Any]:
    def build() -> Any:
        message = typed_message("FP32", [1], "fp32_contents", [1.0])
        configure(message)
        return message

    return build


def _classification(kind: str, value: Any) -> Callable[[Any], None]:
    def configure(message: Any) -> None:
        setattr(message.outputs.add(name="y").parameters["classification"], kind, value)

    return configure


MALFORMED: dict[str, tuple[Callable[[], Any], str]] = {
    "no inputs": (lambda: service_pb2.ModelInferRequest(model_name="m"), "has no inputs"),
    "raw contents not one per input": (_two_raw_for_one_input, "1 inputs but 2 raw_input_contents"),
    "raw and typed contents": (_raw_and_typed, "one or the other"),
    "raw size off": (_raw_size_off, "make 8 bytes"),
    "raw BYTES prefix cut": (_raw_bytes_prefix_cut, "length prefix says 3 bytes"),
    "FP16 in typed contents": (
        lambda: typed_message("FP16", [1], "fp32_contents", [1.0]),
        "FP16, which typed contents cannot carry",
    ),
    "contents of another datatype": (
        lambda: typed_message("FP32", [1], "int_contents", [1]),
        "its contents set int_contents; FP32 goes in fp32_contents",
    ),
    "typed count off": (
        lambda: typed_message("FP32", [2, 2], "fp32_contents", [1.0]),
        "hold 1 elements but its shape [2, 2] holds 4",
    ),
    "NaN in typed contents": (
        lambda: typed_message("FP32", [2], "fp32_contents", [1.0, float("nan")]),
        "element 1 is nan",
    ),
    "value out of range": (
        lambda: typed_message("INT8", [1], "int_contents", [300]),
        "a value that is not INT8",
    ),
    "negative dimension": (
        lambda: typed_message("FP32", [-1], "fp32_contents", []),
        "dimension 0 = -1",
    ),
    "unknown datatype": (
        lambda: typed_message("FLOAT", [1], "fp32_contents", [1.0]),
        "unknown datatype 'FLOAT'",
    ),
    "input without a name": (
        lambda: service_pb2.ModelInferRequest(inputs=[{"datatype": "FP32", "shape": [0]}]),
        "inputs[0] needs a non-empty string 'name'",
    ),
    "input twice": (_duplicate_input, "appears more than once"),
    "shared memory": (_shared_memory_input, "shared memory"),
    "output without a name": (
        _with_output(lambda m: m.outputs.add()),
        "outputs[0] needs a non-empty 'name'",
    ),
    "output twice": (
        _with_output(lambda m: [m.outputs.add(name="y") for _ in range(2)]),
        "requested more than once",
    ),
    "negative class count": (
        _with_output(_classification("int64_param", -2)),
        "non-negative integer class count",
    ),
    "class count as text": (
        _with_output(_classification("string_param", "3")),
        "non-negative integer class count",
    ),
}


@pytest.mark.parametrize(("build", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_refused_saying_why(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(V2InputError) as refused:
        decode(build())
    assert message in refused.value.detail


def test_element_count_above_the_limit_is_refused_before_decoding() -> None:
    message = client_message({"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(V2InputError, match="at most 5 elements"):
        decode(message, limit=5)


# --- Responses parse in the client as the tensors they hold --------------------------------


def test_scores_and_classification_parse_in_the_client_from_raw_contents() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)
    top = classification_output("top", scores, ("cat", "dog", "fish"), 2)
    response = encode_infer_response(
        model_name="m",
        model_version="3",
        request_id="req-9",
        outputs=[OutputTensor("scores", "FP32", scores.shape, scores), top],
    )
    assert len(response.raw_output_contents) == 2
    assert all(not tensor.HasField("contents") for tensor in response.outputs)
    result = grpcclient.InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("scores"), scores)
    assert result.as_numpy("top").tolist() == [
        [b"0.700000:1:dog", b"0.200000:2:fish"],
        [b"0.600000:0:cat", b"0.300000:1:dog"],
    ]
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "req-9")


def test_bytes_output_is_length_prefixed_little_endian() -> None:
    elements = [b"a", b"", b"\x00\xffz"]
    response = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs=[OutputTensor("y", "BYTES", (3,), elements)],
    )
    (raw,) = response.raw_output_contents
    assert raw == prefixed(*elements)
    assert deserialize_bytes_tensor(raw).tolist() == elements
    assert response.id == ""


# --- Descriptions are the REST documents in their messages --------------------------------


def test_server_and_model_metadata_carry_the_rest_documents_fields() -> None:
    server = {"name": "gw", "version": "1.0", "extensions": ["classification"]}
    assert json_format.MessageToDict(server_metadata_response(server)) == server
    metadata = {
        "name": "m",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 224, 224, 3]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    message = model_metadata_response(metadata)
    assert list(message.inputs[0].shape) == [-1, 224, 224, 3]
    assert (message.outputs[0].name, list(message.versions)) == ("logits", ["1", "2"])


def test_model_config_names_the_protobufs_own_enums() -> None:
    document = {
        "name": "m",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": 8,
        "input": [
            {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NHWC", "dims": [9, 9, 3]}
        ],
        "output": [
            {"name": "logits", "data_type": "TYPE_FP32", "dims": [10], "label_filename": "l.txt"}
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": 500},
    }
    config = model_config_response(document).config
    (model_input,) = config.input
    assert model_input.format == model_input.FORMAT_NHWC and list(model_input.dims) == [9, 9, 3]
    assert config.max_batch_size == 8 and config.output[0].label_filename == "l.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_a_description_field_the_message_lacks_is_a_programming_error() -> None:
    with pytest.raises(json_format.ParseError):
        model_config_response({"name": "m", "no_such_field": 1})
