"""The Open Inference Protocol codec, proven against what ``tritonclient.http`` sends and
reads: requests it builds decode to the same tensors, responses it parses hold the
tensors encoded, and every malformed request is refused with a message that says why."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from inference_gateway.api.v2.codec import (
    DATATYPES,
    INFERENCE_HEADER_CONTENT_LENGTH,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    V2InputError,
    classification_output,
    decode_infer_request,
    encode_infer_response,
    error_body,
    parse_header_length,
)
from inference_gateway.errors import InvalidInputException, ModelInferenceException

Client = httpclient.InferenceServerClient
LIMIT = 1_000_000


def png(colour: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def client_request(
    arrays: dict[str, np.ndarray],
    *,
    binary: bool | dict[str, bool] = True,
    outputs: list[httpclient.InferRequestedOutput] | None = None,
    request_id: str = "",
) -> tuple[bytes, int | None]:
    """The body and ``Inference-Header-Content-Length`` tritonclient sends for ``arrays``."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == np.object_ else _datatype(array.dtype)
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        as_binary = binary if isinstance(binary, bool) else binary[name]
        tensor.set_data_from_numpy(array, binary_data=as_binary)
        inputs.append(tensor)
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id=request_id)
    return body, json_size


def _datatype(dtype: np.dtype[Any]) -> str:
    return next(name for name, known in DATATYPES.items() if known == dtype)


def decode(body: bytes, header_length: int | None = None, limit: int = LIMIT) -> InferRequest:
    return decode_infer_request(body, header_length, max_elements=limit)


def json_request(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **fields}).encode()


def fp32(data: Any, shape: list[Any] | None = None, name: str = "x") -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": [len(data)] if shape is None else shape,
        "data": data,
    }


def binary_request(
    *inputs: tuple[dict[str, Any], bytes], trailing: bytes = b"", **fields: Any
) -> tuple[bytes, int]:
    """A binary-extension body by hand, for what the client library never sends."""
    header = json.dumps({"inputs": [spec for spec, _ in inputs], **fields}).encode()
    return header + b"".join(raw for _, raw in inputs) + trailing, len(header)


def binary_input(
    name: str, datatype: str, shape: list[int], raw: bytes
) -> tuple[dict[str, Any], bytes]:
    spec = {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": len(raw)},
    }
    return spec, raw


def parsed(body: bytes, header_length: int | None) -> Any:
    """The client's view of a response body."""
    return Client.parse_response_body(body, header_length=header_length)


def cut_short(request: tuple[bytes, int]) -> tuple[bytes, int]:
    """A binary-extension body missing its last byte."""
    body, header_length = request
    return body[:-1], header_length


def prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# --- Requests the client library builds decode to the tensors it was given ----------------


RNG = np.random.default_rng(7)
NUMERIC_CASES = {
    "FP32 [2,3,4,4]": RNG.standard_normal((2, 3, 4, 4)).astype(np.float32),
    "FP16 [2,3]": RNG.standard_normal((2, 3)).astype(np.float16),
    "INT64 [3,2]": np.array([[-(2**62), 0], [1, 2**62], [-5, 7]], dtype=np.int64),
    "BOOL [4]": np.array([True, False, False, True]),
    "UINT8 [2,2]": np.array([[0, 255], [17, 3]], dtype=np.uint8),
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("array", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_numeric_tensor_from_the_client_decodes_to_the_same_array(
    array: np.ndarray, binary: bool
) -> None:
    body, header_length = client_request({"x": array}, binary=binary, request_id="req-1")
    assert (header_length is not None) == binary

    request = decode(body, header_length)

    assert request.id == "req-1"
    (tensor,) = request.inputs
    assert tensor.name == "x"
    assert tensor.datatype == _datatype(array.dtype)
    assert tensor.shape == array.shape
    assert isinstance(tensor.data, np.ndarray)
    assert tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.data, array)
    assert not tensor.data.flags.writeable


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", [(3,), (3, 1)], ids=["[N]", "[N,1]"])
def test_png_images_as_bytes_decode_to_the_same_bytes(shape: tuple[int, ...], binary: bool) -> None:
    images = [png((255, 0, 0)), png((0, 255, 0), (7, 5)), png((0, 0, 255), (1, 1))]
    array = np.array(images, dtype=np.object_).reshape(shape)
    if not binary:
        # JSON carries BYTES as UTF-8 strings, so the client can only send text that way.
        images = [b"first", "zweite \u00fc".encode(), b""]
        array = np.array(images, dtype=np.object_).reshape(shape)
    body, header_length = client_request({"images": array}, binary=binary)

    (tensor,) = decode(body, header_length).inputs

    assert tensor.datatype == "BYTES"
    assert tensor.shape == shape
    assert tensor.data == images


def test_request_naming_no_outputs_asks_for_every_output_in_binary() -> None:
    body, header_length = client_request({"x": np.zeros((1, 3), np.float32)})

    request = decode(body, header_length)

    assert request.outputs == ()
    assert request.binary_output is True
    assert request.wants_binary(None) is True


def test_requested_outputs_keep_binary_and_classification() -> None:
    outputs = [
        httpclient.InferRequestedOutput("scores", binary_data=False),
        httpclient.InferRequestedOutput("top", binary_data=True, class_count=5),
    ]
    body, header_length = client_request({"x": np.zeros((1, 3), np.float32)}, outputs=outputs)

    request = decode(body, header_length)

    assert request.outputs == (
        RequestedOutput(name="scores", binary=False, classification=None),
        RequestedOutput(name="top", binary=True, classification=5),
    )
    assert request.binary_output is False
    assert [request.wants_binary(o) for o in request.outputs] == [False, True]


def test_an_output_without_binary_data_follows_binary_data_output() -> None:
    body = json_request(
        fp32([1.0]),
        outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        parameters={"binary_data_output": True},
    )

    request = decode(body)

    assert [request.wants_binary(o) for o in request.outputs] == [True, False]


def test_classification_count_zero_means_none_as_in_triton() -> None:
    body = json_request(fp32([1.0]), outputs=[{"name": "a", "parameters": {"classification": 0}}])

    assert decode(body).outputs[0].classification is None


def test_binary_and_json_inputs_mixed_take_their_binary_data_in_order() -> None:
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    middle = np.array([4, 5], dtype=np.int64)
    last = np.array([b"\x00\xffraw", b"x"], dtype=np.object_)
    body, header_length = client_request(
        {"first": first, "middle": middle, "last": last},
        binary={"first": True, "middle": False, "last": True},
    )

    request = decode(body, header_length)

    assert [t.name for t in request.inputs] == ["first", "middle", "last"]
    np.testing.assert_array_equal(request.inputs[0].data, first)
    np.testing.assert_array_equal(request.inputs[1].data, middle)
    assert request.inputs[2].data == [b"\x00\xffraw", b"x"]


def test_aligned_binary_fp32_is_a_view_of_the_body_without_a_copy() -> None:
    array = np.ones((2, 3, 4, 4), dtype=np.float32)
    for request_id in ("a", "ab", "abc", "abcd"):
        body, header_length = client_request({"x": array}, request_id=request_id)
        assert header_length is not None
        if header_length % 4 == 0:
            break
    (tensor,) = decode(body, header_length).inputs

    assert isinstance(tensor.data, np.ndarray)
    assert np.shares_memory(tensor.data, np.frombuffer(body, dtype=np.uint8))


def test_misaligned_binary_data_is_copied_to_an_aligned_array() -> None:
    array = np.arange(8, dtype=np.float64)
    for request_id in ("a", "ab", "abc", "abcd"):
        body, header_length = client_request({"x": array}, request_id=request_id)
        assert header_length is not None
        if header_length % 8:
            break
    (tensor,) = decode(body, header_length).inputs

    assert isinstance(tensor.data, np.ndarray)
    assert tensor.data.flags.aligned and not tensor.data.flags.writeable
    np.testing.assert_array_equal(tensor.data, array)


def test_nested_json_data_matching_the_shape_is_flattened_row_major() -> None:
    body = json_request(fp32([[[1, 2], [3, 4.5]], [[5, 6], [7, 8]]], [2, 2, 2]))

    (tensor,) = decode(body).inputs

    assert isinstance(tensor.data, np.ndarray)
    np.testing.assert_array_equal(tensor.data.ravel(), [1, 2, 3, 4.5, 5, 6, 7, 8])
    assert tensor.data.shape == (2, 2, 2)


def test_bytes_in_json_may_be_base64_objects() -> None:
    image = png((1, 2, 3))
    body = json_request(
        {
            "name": "images",
            "datatype": "BYTES",
            "shape": [2, 1],
            "data": [[{"b64": base64.b64encode(image).decode()}], ["plain"]],
        }
    )

    (tensor,) = decode(body).inputs

    assert tensor.data == [image, b"plain"]


def test_empty_tensors_decode_in_binary_and_json() -> None:
    body, header_length = binary_request(
        binary_input("a", "FP32", [0, 3], b""),
        ({"name": "b", "datatype": "INT32", "shape": [2, 0], "data": []}, b""),
    )

    first, second = decode(body, header_length).inputs

    assert first.shape == (0, 3) and isinstance(first.data, np.ndarray) and first.data.size == 0
    assert isinstance(second.data, np.ndarray) and second.data.shape == (2, 0)


def test_unknown_fields_and_parameters_are_ignored() -> None:
    body = json_request(
        fp32([1.0]) | {"parameters": {"custom": "x"}},
        model_name="m",
        parameters={"priority": 1, "timeout": 100, "sequence_id": "s"},
    )

    assert decode(body).inputs[0].name == "x"


def test_fp_tensors_take_json_integers() -> None:
    (tensor,) = decode(json_request(fp32([1, 2, 3]))).inputs

    assert isinstance(tensor.data, np.ndarray)
    assert tensor.data.dtype == np.float32
    np.testing.assert_array_equal(tensor.data, [1.0, 2.0, 3.0])


def test_v2_input_error_is_the_gateways_invalid_input() -> None:
    error = V2InputError("what is wrong")

    assert isinstance(error, InvalidInputException)
    assert error.slug == "invalid-input"
    assert error.detail == "what is wrong"


# --- Malformed requests are refused, saying what does not add up --------------------------


def _refused(body: bytes, header_length: int | None = None, limit: int = LIMIT) -> str:
    with pytest.raises(V2InputError) as caught:
        decode(body, header_length, limit)
    return caught.value.detail


JSON_ERRORS: list[tuple[str, bytes, str]] = [
    ("invalid JSON", b'{"inputs": [', "The request is not valid JSON: Expecting value at line 1"),
    ("not UTF-8", b'{"inputs": "\xff"}', "The request's JSON is not valid UTF-8 (at byte 12)"),
    ("not an object", b"[1, 2]", "The request must be a JSON object, not an array."),
    (
        "NaN literal",
        json_request(fp32([1.0])).replace(b"1.0", b"NaN"),
        "holds NaN, which JSON does not allow",
    ),
    (
        "Infinity literal",
        json_request(fp32([1.0])).replace(b"1.0", b"-Infinity"),
        "holds -Infinity",
    ),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("id not a string", json_request(fp32([1.0]), id=7), "'id' must be a string, not an integer."),
    (
        "parameters not an object",
        json_request(fp32([1.0]), parameters=[]),
        "The request's 'parameters' must be an object, not an array.",
    ),
    (
        "binary_data_output not bool",
        json_request(fp32([1.0]), parameters={"binary_data_output": 1}),
        "'parameters.binary_data_output' must be true or false, not an integer.",
    ),
    ("no inputs", b"{}", "The request has no 'inputs'; it must list its input tensors."),
    ("inputs not a list", b'{"inputs": {}}', "has 'inputs' that is not an array"),
    ("empty inputs", b'{"inputs": []}', "The request's 'inputs' is empty"),
    ("input not an object", b'{"inputs": [3]}', "inputs[0] must be an object, not an integer."),
    (
        "input without name",
        json_request({"datatype": "FP32", "shape": [1], "data": [1]}),
        "inputs[0] needs a non-empty string 'name'.",
    ),
    (
        "input name not a string",
        json_request({"name": 5, "datatype": "FP32", "shape": [1], "data": [1]}),
        "inputs[0] needs a non-empty string 'name'.",
    ),
    (
        "no datatype",
        json_request({"name": "x", "shape": [1], "data": [1]}),
        "Input 'x' needs a string 'datatype'.",
    ),
    (
        "unknown datatype",
        json_request(fp32([1.0]) | {"datatype": "FP8"}),
        "Input 'x' has unknown datatype 'FP8'; known: BOOL, UINT8",
    ),
    (
        "BF16 unsupported",
        json_request(fp32([1.0]) | {"datatype": "BF16"}),
        "unknown datatype 'BF16'",
    ),
    (
        "no shape",
        json_request({"name": "x", "datatype": "FP32", "data": [1]}),
        "Input 'x' needs a 'shape' array of dimensions.",
    ),
    (
        "negative dimension",
        json_request(fp32([1.0], [1, -1])),
        "Input 'x': shape [1, -1] has dimension 1 = -1; dimensions are non-negative integers.",
    ),
    ("fractional dimension", json_request(fp32([1.0], [2.5])), "has dimension 0 = 2.5"),
    ("string dimension", json_request(fp32([1.0], ["1"])), "has dimension 0 = '1'"),
    ("boolean dimension", json_request(fp32([1.0], [True])), "has dimension 0 = True"),
    (
        "count mismatch",
        json_request(fp32([1.0, 2.0], [3])),
        "Input 'x': 'data' holds 2 elements but its shape [3] holds 3.",
    ),
    (
        "data not an array",
        json_request(fp32([1.0]) | {"data": 1.0}),
        "Input 'x': 'data' must be an array, not a number.",
    ),
    (
        "nested short row",
        json_request(fp32([[1, 2], [3]], [2, 2])),
        "nested 'data' does not match its shape [2, 2]: at depth 1 an array of 2 is expected, found one of 1.",
    ),
    (
        "nested scalar row",
        json_request(fp32([[1, 2], 3], [2, 2])),
        "at depth 1 an array of 2 is expected, found an integer.",
    ),
    (
        "nested outer count",
        json_request(fp32([[1, 2]], [2, 2])),
        "at depth 0 an array of 2 is expected, found one of 1.",
    ),
    (
        "nested too deep",
        json_request(fp32([[[1]], [[2]]], [2, 1])),
        "nested deeper than its shape [2, 1]",
    ),
    (
        "nested for a scalar",
        json_request(fp32([[1.0]], [])),
        "'data' is nested but its shape [] is a scalar.",
    ),
    (
        "data and binary",
        json_request(fp32([1.0]) | {"parameters": {"binary_data_size": 4}}),
        "Input 'x' sets both 'data' and 'parameters.binary_data_size'",
    ),
    (
        "neither data nor binary",
        json_request({"name": "x", "datatype": "FP32", "shape": [1]}),
        "Input 'x' has neither 'data' nor 'parameters.binary_data_size'.",
    ),
    (
        "input parameters not object",
        json_request(fp32([1.0]) | {"parameters": 3}),
        "Input 'x': 'parameters' must be an object, not an integer.",
    ),
    (
        "shared memory input",
        json_request(
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1],
                "parameters": {"shared_memory_region": "r"},
            }
        ),
        "Input 'x' asks for shared memory",
    ),
    (
        "booleans for INT64",
        json_request({"name": "x", "datatype": "INT64", "shape": [2], "data": [1, True]}),
        "Input 'x' is INT64, which takes integers, but 'data' holds true/false.",
    ),
    (
        "floats for INT32",
        json_request({"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2.0]}),
        "INT32, which takes integers, but 'data' holds numbers with a fraction or exponent.",
    ),
    (
        "integers for BOOL",
        json_request({"name": "x", "datatype": "BOOL", "shape": [2], "data": [1, 0]}),
        "BOOL, which takes true/false, but 'data' holds integers.",
    ),
    (
        "strings for FP32",
        json_request(fp32(["1.0", None])),
        "FP32, which takes integers or numbers with a fraction or exponent, but 'data' holds null and strings.",
    ),
    ("booleans for FP32", json_request(fp32([True])), "but 'data' holds true/false."),
    (
        "UINT8 above range",
        json_request({"name": "x", "datatype": "UINT8", "shape": [2], "data": [1, 256]}),
        "Input 'x': value 256 is outside UINT8's range [0, 255].",
    ),
    (
        "INT8 below range",
        json_request({"name": "x", "datatype": "INT8", "shape": [1], "data": [-129]}),
        "value -129 is outside INT8's range [-128, 127].",
    ),
    (
        "UINT64 negative",
        json_request({"name": "x", "datatype": "UINT64", "shape": [1], "data": [-1]}),
        "value -1 is outside UINT64's range",
    ),
    (
        "FP32 overflow",
        json_request(fp32([1.0, 1e39])),
        "Input 'x': element 1 is inf as FP32; NaN and infinities are refused.",
    ),
    (
        "FP16 overflow",
        json_request(fp32([70000.0]) | {"datatype": "FP16"}),
        "element 0 is inf as FP16",
    ),
    (
        "FP64 literal overflow",
        json_request(fp32([0.0]) | {"datatype": "FP64"}).replace(b"0.0", b"1e400"),
        "element 0 is inf as FP64",
    ),
    (
        "integer too large for FP",
        json_request(fp32([10**400])),
        "Input 'x' holds an integer too large for FP32.",
    ),
    (
        "BYTES number",
        json_request({"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", 3]}),
        "Input 's' is BYTES, which takes strings or {\"b64\": ...} objects, but element 1 is an integer.",
    ),
    (
        "BYTES invalid base64",
        json_request(
            {"name": "s", "datatype": "BYTES", "shape": [1], "data": [{"b64": "not base64!"}]}
        ),
        "Input 's': element 0's 'b64' is not valid base64",
    ),
    (
        "BYTES non-ASCII base64",
        json_request({"name": "s", "datatype": "BYTES", "shape": [1], "data": [{"b64": "\u00e9"}]}),
        "element 0's 'b64' is not valid base64",
    ),
    (
        "BYTES object with other keys",
        json_request(
            {"name": "s", "datatype": "BYTES", "shape": [1], "data": [{"b64": "", "x": 1}]}
        ),
        'element 0 is an object; a BYTES object must be {"b64": "<base64 text>"} and nothing else.',
    ),
    (
        "BYTES lone surrogate",
        b'{"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
        "element 0 is not valid Unicode",
    ),
    (
        "duplicate inputs",
        json_request(fp32([1.0]), fp32([2.0])),
        "Input 'x' appears more than once in 'inputs'.",
    ),
    (
        "outputs not a list",
        json_request(fp32([1.0]), outputs={}),
        "'outputs' must be an array, not an object.",
    ),
    (
        "output not an object",
        json_request(fp32([1.0]), outputs=["a"]),
        "outputs[0] must be an object, not a string.",
    ),
    (
        "output without name",
        json_request(fp32([1.0]), outputs=[{}]),
        "outputs[0] needs a non-empty string 'name'.",
    ),
    (
        "duplicate outputs",
        json_request(fp32([1.0]), outputs=[{"name": "o"}, {"name": "o"}]),
        "Output 'o' is requested more than once.",
    ),
    (
        "binary_data not bool",
        json_request(fp32([1.0]), outputs=[{"name": "o", "parameters": {"binary_data": "yes"}}]),
        "Output 'o': binary_data must be true or false, not a string.",
    ),
    (
        "negative classification",
        json_request(fp32([1.0]), outputs=[{"name": "o", "parameters": {"classification": -1}}]),
        "Output 'o': classification must be a non-negative class count, not -1.",
    ),
    (
        "fractional classification",
        json_request(fp32([1.0]), outputs=[{"name": "o", "parameters": {"classification": 2.5}}]),
        "not 2.5",
    ),
    (
        "shared memory output",
        json_request(
            fp32([1.0]), outputs=[{"name": "o", "parameters": {"shared_memory_region": "r"}}]
        ),
        "Output 'o' asks for shared memory",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in JSON_ERRORS], ids=[c[0] for c in JSON_ERRORS]
)
def test_malformed_json_request_is_refused(body: bytes, message: str) -> None:
    assert message in _refused(body)


FP32_PAIR = struct.pack("<2f", 1.0, 2.0)
BINARY_ERRORS: list[tuple[str, tuple[bytes, int], str]] = [
    (
        "size overruns the body",
        cut_short(binary_request(binary_input("x", "FP32", [2], FP32_PAIR))),
        "Input 'x' declares binary_data_size 8 but only 7 bytes of binary data are left after the JSON header.",
    ),
    (
        "leftover bytes",
        binary_request(binary_input("x", "FP32", [2], FP32_PAIR), trailing=b"zz"),
        "2 bytes after the JSON header belong to no input: the inputs' binary_data_size values add up to 8 of the 10 bytes that follow it.",
    ),
    (
        "numeric size mismatch",
        binary_request(binary_input("x", "FP32", [3], FP32_PAIR)),
        "Input 'x' is FP32 [3]: 3 elements of 4 bytes make 12 bytes, but its binary_data_size is 8.",
    ),
    (
        "negative binary size",
        binary_request(
            (
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [0],
                    "parameters": {"binary_data_size": -1},
                },
                b"",
            )
        ),
        "Input 'x': binary_data_size must be a non-negative integer, not -1.",
    ),
    (
        "string binary size",
        binary_request(
            (
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [0],
                    "parameters": {"binary_data_size": "8"},
                },
                b"",
            )
        ),
        "not '8'",
    ),
    (
        "NaN in FP32",
        binary_request(binary_input("x", "FP32", [2], struct.pack("<2f", 1.0, float("nan")))),
        "Input 'x': element 1 is nan as FP32; NaN and infinities are refused.",
    ),
    (
        "Inf in FP16",
        binary_request(binary_input("x", "FP16", [2], np.array([np.inf, 1], np.float16).tobytes())),
        "element 0 is inf as FP16",
    ),
    (
        "BOOL byte not 0 or 1",
        binary_request(binary_input("x", "BOOL", [3], b"\x01\x00\x02")),
        "Input 'x': element 2 is the byte 2; BOOL bytes are 0 or 1.",
    ),
    (
        "BYTES too short for prefixes",
        binary_request(binary_input("s", "BYTES", [2], prefixed(b"")[:3] + b"\x00\x00")),
        "Input 's' is BYTES [2]: its 2 elements need at least 8 bytes of length prefixes, but its binary_data_size is 5.",
    ),
    (
        "BYTES length overruns",
        binary_request(binary_input("s", "BYTES", [2], struct.pack("<I", 50) + b"abcd")),
        "Input 's': element 0's length prefix says 50 bytes but only 4 bytes of its binary data are left.",
    ),
    (
        "BYTES prefix cut off",
        binary_request(binary_input("s", "BYTES", [2], prefixed(b"abcdefg") + b"\x01\x00")),
        "element 1's 4-byte length prefix is cut off at byte 11 of its 13 bytes",
    ),
    (
        "BYTES leftover",
        binary_request(binary_input("s", "BYTES", [1], prefixed(b"ab", b"c"))),
        "Input 's': 5 bytes of its binary data are left over after the 1 elements its shape [1] holds.",
    ),
]


@pytest.mark.parametrize(
    ("request_", "message"), [c[1:] for c in BINARY_ERRORS], ids=[c[0] for c in BINARY_ERRORS]
)
def test_malformed_binary_request_is_refused(request_: tuple[bytes, int], message: str) -> None:
    body, header_length = request_
    assert message in _refused(body, header_length)


def test_header_length_beyond_the_body_is_refused() -> None:
    body, header_length = client_request({"x": np.zeros(2, np.float32)})
    assert header_length is not None

    message = _refused(body, len(body) + 1)

    assert message == (
        f"{INFERENCE_HEADER_CONTENT_LENGTH} is {len(body) + 1} but the body has {len(body)} bytes; "
        f"the JSON header must be 1 to {len(body)} bytes long."
    )


@pytest.mark.parametrize("header_length", [0, -3])
def test_header_length_below_one_is_refused(header_length: int) -> None:
    message = _refused(json_request(fp32([1.0])), header_length)

    assert f"{INFERENCE_HEADER_CONTENT_LENGTH} is {header_length} but the body has" in message


def test_header_length_cutting_the_json_short_is_refused() -> None:
    body, header_length = client_request({"x": np.zeros(2, np.float32)})
    assert header_length is not None

    assert "The request is not valid JSON" in _refused(body, header_length - 1)


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros(4, np.float32), "The request is not valid JSON: Extra data"),
        (np.full(4, 0.1, np.float32), "The request's JSON is not valid UTF-8"),
    ],
    ids=["UTF-8 bytes", "other bytes"],
)
def test_binary_body_without_its_header_length_says_the_header_is_missing(
    array: np.ndarray, problem: str
) -> None:
    body, _ = client_request({"x": array})

    message = _refused(body, None)

    assert message.startswith(problem)
    assert f"needs the {INFERENCE_HEADER_CONTENT_LENGTH} header" in message


def test_binary_input_without_a_header_length_says_the_header_is_missing() -> None:
    header = json.dumps({"inputs": [binary_input("x", "FP32", [1], b"1234")[0]]}).encode()

    message = _refused(header, None)

    assert "declares binary_data_size 4 but only 0 bytes" in message
    assert f"needs the {INFERENCE_HEADER_CONTENT_LENGTH} header" in message


def test_element_count_above_the_limit_is_refused_before_decoding() -> None:
    body, header_length = client_request({"x": np.zeros((2, 3, 4, 4), np.float32)})

    message = _refused(body, header_length, limit=95)

    assert message == (
        "Input 'x' has 96 elements, which takes the request to 96; "
        "at most 95 elements are accepted."
    )


def test_element_limit_counts_all_inputs_together() -> None:
    body = json_request(fp32([1.0, 2.0], name="a"), fp32([3.0, 4.0], name="b"))

    assert decode(body, limit=4).inputs[1].name == "b"
    assert _refused(body, limit=3) == (
        "Input 'b' has 2 elements, which takes the request to 4; at most 3 elements are accepted."
    )


def test_huge_shape_is_refused_without_allocating() -> None:
    body = json_request(fp32([1.0], [10**6, 10**6, 10**6]))

    assert "has 1000000000000000000 elements" in _refused(body)


# --- Responses parse in the client library to the tensors encoded -------------------------


def encode(
    outputs: list[OutputTensor], binary: list[bool], request_id: str | None = "r-9"
) -> tuple[bytes, int | None]:
    return encode_infer_response(
        model_name="efficientnet",
        model_version="3",
        request_id=request_id,
        outputs=outputs,
        binary=binary,
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("array", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_numeric_output_round_trips_through_the_client(array: np.ndarray, binary: bool) -> None:
    tensor = OutputTensor("out", _datatype(array.dtype), array.shape, array)

    body, header_length = encode([tensor], [binary])

    assert (header_length is not None) == binary
    result = parsed(body, header_length)
    got = result.as_numpy("out")
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)
    assert result.get_response()["id"] == "r-9"
    assert result.get_response()["model_name"] == "efficientnet"
    assert result.get_response()["model_version"] == "3"


def test_fp32_scores_round_trip_exactly_through_json() -> None:
    scores = np.array([[0.1, 1 / 3, 1e-30, -7.25]], dtype=np.float32)

    body, header_length = encode([OutputTensor("s", "FP32", scores.shape, scores)], [False])

    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == scores.ravel().tolist()
    np.testing.assert_array_equal(parsed(body, None).as_numpy("s"), scores)


def test_bytes_output_round_trips_in_binary() -> None:
    elements = [png((9, 9, 9)), b"", b"\x00\x01"]

    body, header_length = encode([OutputTensor("b", "BYTES", (3, 1), elements)], [True])

    got = parsed(body, header_length).as_numpy("b")
    assert got.shape == (3, 1)
    assert got.ravel().tolist() == elements


def test_bytes_output_goes_in_json_as_utf8_strings() -> None:
    elements = ["caf\u00e9".encode(), b"tabby"]

    body, header_length = encode([OutputTensor("b", "BYTES", (2,), elements)], [False])

    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == ["caf\u00e9", "tabby"]
    assert parsed(body, None).as_numpy("b").tolist() == ["caf\u00e9", "tabby"]


def test_binary_outputs_follow_the_json_in_order_among_json_ones() -> None:
    first = np.arange(3, dtype=np.float32)
    second = np.array([7, 8], dtype=np.int64)
    third = np.array([[True, False]])
    outputs = [
        OutputTensor("first", "FP32", first.shape, first),
        OutputTensor("second", "INT64", second.shape, second),
        OutputTensor("third", "BOOL", third.shape, third),
    ]

    body, header_length = encode(outputs, [True, False, True])

    assert header_length is not None
    header = json.loads(body[:header_length])
    assert [o.get("parameters") for o in header["outputs"]] == [
        {"binary_data_size": 12},
        None,
        {"binary_data_size": 2},
    ]
    assert len(body) == header_length + 12 + 2
    result = parsed(body, header_length)
    for name, array in (("first", first), ("second", second), ("third", third)):
        np.testing.assert_array_equal(result.as_numpy(name), array)


def test_response_without_request_id_has_no_id() -> None:
    array = np.zeros(1, np.float32)

    body, _ = encode([OutputTensor("o", "FP32", (1,), array)], [False], request_id=None)

    assert "id" not in json.loads(body)


def test_nan_in_a_json_output_is_a_model_failure() -> None:
    array = np.array([1.0, np.nan], np.float32)

    with pytest.raises(ModelInferenceException, match="Output 'o' holds NaN or infinite values"):
        encode([OutputTensor("o", "FP32", (2,), array)], [False])


@pytest.mark.parametrize(
    ("outputs", "binary", "message"),
    [
        (
            [OutputTensor("o", "FP32", (1,), np.zeros(1, np.float32))],
            [True, False],
            "1 outputs but 2 binary flags",
        ),
        (
            [OutputTensor("o", "FP32", (2,), np.zeros(2, np.float64))],
            [True],
            "output 'o' is FP32 but its data is float64",
        ),
        (
            [OutputTensor("o", "FP32", (3,), np.zeros(2, np.float32))],
            [False],
            "output 'o' has 2 elements for shape [3]",
        ),
        (
            [OutputTensor("o", "BYTES", (2,), [b"a"])],
            [True],
            "output 'o' has 1 elements for shape [2]",
        ),
        ([OutputTensor("o", "BYTES", (1,), ["a"])], [True], "holds elements that are not bytes"),  # type: ignore[list-item]
        ([OutputTensor("o", "BYTES", (1,), [b"\xff"])], [False], "holds bytes that are not UTF-8"),
        (
            [OutputTensor("o", "FP8", (1,), np.zeros(1, np.float32))],
            [True],
            "'FP8' is not a numeric datatype",
        ),
    ],
    ids=[
        "flag count",
        "wrong dtype",
        "wrong count",
        "bytes count",
        "str elements",
        "non-UTF-8 JSON",
        "unknown datatype",
    ],
)
def test_inconsistent_outputs_are_a_programming_error(
    outputs: list[OutputTensor], binary: list[bool], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        encode(outputs, binary)


# --- The classification extension -----------------------------------------------------------


SCORES = np.array([[0.05, 0.739712, 0.2, 0.01], [0.5, 0.1, 0.3, 0.1]], dtype=np.float32)
LABELS = ["tabby", "Egyptian cat", "tiger cat", "lynx"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_parses_in_the_client_as_score_index_label(binary: bool) -> None:
    output = classification_output("probs", SCORES, LABELS, 2)

    body, header_length = encode([output], [binary])

    got = parsed(body, header_length).as_numpy("probs")
    assert got.shape == (2, 2)
    expected = [
        ["0.739712:1:Egyptian cat", "0.200000:2:tiger cat"],
        ["0.500000:0:tabby", "0.300000:2:tiger cat"],
    ]
    if binary:
        assert got.tolist() == [[e.encode() for e in row] for row in expected]
    else:
        assert got.tolist() == expected


def test_classification_reads_as_tritons_image_client_reads_it() -> None:
    body, header_length = encode([classification_output("probs", SCORES, LABELS, 1)], [True])

    (top,) = parsed(body, header_length).as_numpy("probs")[0]
    score, index, label = "".join(chr(x) for x in top).split(":")

    assert (float(score), int(index), label) == (pytest.approx(0.739712), 1, "Egyptian cat")


def test_classification_without_labels_is_score_and_index() -> None:
    output = classification_output("probs", SCORES[:1], [], 3)

    assert output.data == [b"0.739712:1", b"0.200000:2", b"0.050000:0"]


def test_classification_count_is_capped_at_the_class_count() -> None:
    output = classification_output("probs", SCORES, LABELS, 10)

    assert output.shape == (2, 4)
    assert len(output.data) == 8


def test_classification_ties_rank_the_lower_index_first() -> None:
    output = classification_output("p", np.array([[0.1, 0.4, 0.4, 0.1]], np.float32), [], 4)

    assert output.data == [b"0.400000:1", b"0.400000:2", b"0.100000:0", b"0.100000:3"]


def test_classification_of_integer_scores_prints_integers_as_triton_does() -> None:
    output = classification_output("p", np.array([[1, 5, 10, 4]], np.uint32), [], 2)

    assert output.data == [b"10:2", b"5:1"]


@pytest.mark.parametrize(
    ("scores", "labels", "k", "message"),
    [
        (np.zeros(4, np.float32), [], 1, "scores of shape [N, C], got [4]"),
        (np.zeros((1, 4), np.float32), [], 0, "at least 1, got 0"),
        (np.zeros((1, 4), np.float32), ["a"], 1, "1 labels for 4 classes"),
    ],
    ids=["1-D scores", "k of 0", "labels short"],
)
def test_classification_refuses_what_it_cannot_rank(
    scores: np.ndarray, labels: list[str], k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        classification_output("p", scores, labels, k)


# --- Error bodies and the header's value ----------------------------------------------------


def test_error_body_is_the_json_clients_read_the_message_from() -> None:
    body = error_body('Input "x" is bad \u2014 really')

    assert json.loads(body) == {"error": 'Input "x" is bad \u2014 really'}
    assert body.startswith(b'{"error": "')


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", 0), (" 181 ", 181)])
def test_header_length_value_parses(value: str | None, expected: int | None) -> None:
    assert parse_header_length(value) == expected


@pytest.mark.parametrize("value", ["", "-1", "1.5", "12a", "\u0661\u0662"])
def test_header_length_value_that_is_not_a_count_is_refused(value: str) -> None:
    with pytest.raises(
        V2InputError, match=f"{INFERENCE_HEADER_CONTENT_LENGTH} must be a non-negative integer"
    ):
        parse_header_length(value)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_elements_are_bounded_before_any_is_split_out(binary: bool) -> None:
    """Millions of empty BYTES elements fit in a small body; each split out would be a
    Python object. They are counted from the shape and refused before any is read."""
    count = 100_000
    if binary:
        raw = struct.pack("<I", 0) * count
        header = json_request(
            {"name": "x", "datatype": "BYTES", "shape": [count],
             "parameters": {"binary_data_size": len(raw)}}
        )  # fmt: skip
        body, header_length = header + raw, len(header)
    else:
        body = json_request(
            {"name": "x", "datatype": "BYTES", "shape": [count], "data": [""] * count}
        )
        header_length = None
    with pytest.raises(V2InputError) as caught:
        decode_infer_request(body, header_length, max_elements=LIMIT * count, max_bytes_elements=32)
    assert caught.value.detail == (
        f"Input 'x' has {count} BYTES elements, which takes the request to {count}; "
        "at most 32 BYTES elements are accepted (each is an image: MAX_IMAGES_PER_REQUEST)."
    )
    # The same elements within the bound are read as ever.
    small = decode_infer_request(
        json_request({"name": "x", "datatype": "BYTES", "shape": [32], "data": [""] * 32}),
        None, max_elements=LIMIT, max_bytes_elements=32,
    )  # fmt: skip
    assert small.inputs[0].data == [b""] * 32
