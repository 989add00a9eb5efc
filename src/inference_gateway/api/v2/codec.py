"""The Open Inference Protocol's REST bodies as pure functions: bytes in, tensors out.

Speaks the protocol as Triton and ``tritonclient.http`` do, with two of Triton's
extensions: binary tensor data (a JSON header of ``Inference-Header-Content-Length``
bytes, then each binary tensor's raw little-endian bytes in order; a BYTES element is a
4-byte little-endian length and its bytes) and classification (an output replaced by
a BYTES ``[N, k]`` tensor of ``"score:index[:label]"`` strings). Nothing here reads a
socket or knows a web framework: the routes hand over the body and the header's value.
The gRPC service hands over each tensor of its message (`decode_raw_input`,
`decode_typed_input`) and sends `raw_output_bytes`, so both transports check tensors
alike.

Every way a request can fail to add up raises `V2InputError`, whose message names the
input and the number that is off. Numeric tensors decoded from binary data are
read-only views of the request body (copied only when misaligned), so the common case,
one FP32 tensor in binary, costs no copy; all decoded arrays are read-only alike.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple, NoReturn

import numpy as np
import numpy.typing as npt

from inference_gateway.errors import InvalidInputException, ModelInferenceException

#: The HTTP header giving the length of the JSON part of a body with binary tensor data.
INFERENCE_HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"

#: The protocol's tensor datatypes and the numpy dtype of each (little-endian, as the
#: binary extension lays them out); BYTES has none: its elements are `bytes`.
DATATYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": None,
}

_LENGTH_PREFIX = struct.Struct("<I")
#: The most digits a number in a header may have: 20 hold every INT64 and UINT64 value.
#: (JSON's integers are bounded where they are used: shapes by the element budget,
#: values by their datatype's range; Python converts none of over 4,300 digits.)
_MAX_INTEGER_DIGITS = 20
#: The most dimensions a tensor's shape may have (numpy's limit is 64; images use 4).
MAX_DIMENSIONS = 16
_NOT_JSON_HINT = (
    f" (a body carrying binary tensor data needs the {INFERENCE_HEADER_CONTENT_LENGTH} header)"
)
#: How each JSON value type is named in messages about `data` of the wrong kind.
_JSON_KINDS: dict[type, str] = {
    bool: "true/false",
    int: "integers",
    float: "numbers with a fraction or exponent",
    str: "strings",
    dict: "objects",
    list: "arrays",
    type(None): "null",
}


#: An inference request that does not add up; the message says exactly where. The
#: gateway's own invalid-input error: the same metrics, logs and status as /predict's.
V2InputError = InvalidInputException


@dataclass(frozen=True)
class InputTensor:
    """One decoded input tensor.

    ``data`` is a read-only numpy array of the datatype's dtype in ``shape`` for numeric
    datatypes, and the flat row-major list of elements (``len == prod(shape)``) for BYTES.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any] | list[bytes]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request names, with how it wants it back.

    ``binary`` is the output's own ``binary_data`` (None when not given: the request's
    ``binary_output`` decides); ``classification`` is the requested class count (None when
    no classification is asked for; a count of 0 means none, as in Triton).
    """

    name: str
    binary: bool | None
    classification: int | None


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request.

    ``outputs`` is empty when the request names none (every output is then wanted);
    ``binary_output`` is the request's ``parameters.binary_data_output``, the default for
    outputs that do not say.
    """

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool

    def wants_binary(self, output: RequestedOutput | None) -> bool:
        """Whether an output goes back as binary data: its own ``binary_data`` if given,
        else ``binary_data_output`` (the binary data extension's rule). ``None`` stands for
        an output the request did not name."""
        if output is None or output.binary is None:
            return self.binary_output
        return output.binary


@dataclass(frozen=True)
class OutputTensor:
    """One output tensor to encode: a numpy array of the datatype's dtype, or for BYTES
    the flat row-major list of elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any] | list[bytes]


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value as a number, or None when
    the header is absent.

    Raises:
        V2InputError: The value is not a non-negative decimal integer.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdecimal():
        raise V2InputError(
            f"{INFERENCE_HEADER_CONTENT_LENGTH} must be a non-negative integer, not {value[:32]!r}."
        )
    if len(text.lstrip("0")) > _MAX_INTEGER_DIGITS:
        raise V2InputError(
            f"{INFERENCE_HEADER_CONTENT_LENGTH} has {len(text)} digits: longer than any body."
        )
    return int(text)


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    *,
    max_elements: int,
    max_bytes_elements: int | None = None,
) -> InferRequest:
    """Parse an inference request body, JSON alone or with binary tensor data.

    Args:
        body: The whole HTTP body.
        header_length: ``Inference-Header-Content-Length``: how many leading bytes of
            ``body`` are JSON; None when the header is absent (the body is all JSON).
        max_elements: The most tensor elements all inputs may hold together, checked
            from the shapes before any tensor is built (a bound against huge requests).
        max_bytes_elements: The most ``BYTES`` elements among them (default:
            ``max_elements``).

    Raises:
        V2InputError: Anything in the body that does not add up.
    """
    if header_length is None:
        header: bytes = body
        section = _BinarySection(memoryview(b""), declared=False)
    else:
        if header_length <= 0 or header_length > len(body):
            raise V2InputError(
                f"{INFERENCE_HEADER_CONTENT_LENGTH} is {header_length} but the body has "
                f"{len(body)} bytes; the JSON header must be 1 to {len(body)} bytes long."
            )
        header = body[:header_length]
        section = _BinarySection(memoryview(body)[header_length:], declared=True)
    document = _parse_json(header, hint="" if section.declared else _NOT_JSON_HINT)
    if not isinstance(document, dict):
        raise V2InputError(f"The request must be a JSON object, not {_kind_of(document)}.")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2InputError(f"'id' must be a string, not {_kind_of(request_id)}.")
    parameters = _parameters(document, "The request's")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise V2InputError(
            f"'parameters.binary_data_output' must be true or false, not {_kind_of(binary_output)}."
        )

    inputs_json = document.get("inputs")
    if not isinstance(inputs_json, list):
        missing = "has no 'inputs'" if inputs_json is None else "has 'inputs' that is not an array"
        raise V2InputError(f"The request {missing}; it must list its input tensors.")
    if not inputs_json:
        raise V2InputError("The request's 'inputs' is empty; it must list at least one input.")
    inputs: list[InputTensor] = []
    names: set[str] = set()
    budget = ElementBudget(max_elements, max_bytes_elements)
    for position, item in enumerate(inputs_json):
        tensor = _decode_input(item, position, section, budget)
        if tensor.name in names:
            raise V2InputError(f"Input {tensor.name!r} appears more than once in 'inputs'.")
        names.add(tensor.name)
        inputs.append(tensor)
    section.finish()

    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=_decode_outputs(document.get("outputs")),
        binary_output=binary_output,
    )


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
    binary: Sequence[bool],
) -> tuple[bytes, int | None]:
    """Build an inference response body.

    JSON outputs carry ``data`` flat in row-major order (BYTES as UTF-8 strings); binary
    outputs carry ``parameters.binary_data_size`` and their bytes follow the JSON in order.

    Args:
        model_name: The model that answered.
        model_version: Its version.
        request_id: The request's ``id``, echoed when it had one.
        outputs: The output tensors, in the order they are reported.
        binary: For each output, whether it goes as binary data.

    Returns:
        The body, and the JSON header's length for ``Inference-Header-Content-Length``
        when any output is binary (None when the body is all JSON).

    Raises:
        ModelInferenceException: A JSON output holds NaN or an infinity, which JSON cannot
            carry.
        ValueError: An output's data does not match its datatype or shape (a bug).
    """
    if len(binary) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(binary)} binary flags")
    entries: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for tensor, as_binary in zip(outputs, binary, strict=True):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if as_binary:
            raw = raw_output_bytes(tensor)
            entry["parameters"] = {"binary_data_size": raw.nbytes}
            chunks.append(raw)
        else:
            entry["data"] = _output_json(tensor)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = entries
    header = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def classification_output(
    name: str, scores: npt.NDArray[Any], labels: Sequence[str], k: int
) -> OutputTensor:
    """The classification extension's answer for scores of shape ``[N, C]``.

    A BYTES tensor ``[N, min(k, C)]`` whose elements are ``"score:index:label"`` (or
    ``"score:index"`` when there are no labels), highest score first, ties by lower index.
    Scores print as Triton prints them (``std::to_string``: six decimals for floats), so
    clients written against Triton, such as its ``image_client.py``, parse them alike.

    Raises:
        ValueError: ``scores`` is not 2-D, ``k`` is below 1, or ``labels`` is given but
            does not name every class.
    """
    if scores.ndim != 2:
        raise ValueError(f"classification needs scores of shape [N, C], got {list(scores.shape)}")
    if k < 1:
        raise ValueError(f"classification needs a class count of at least 1, got {k}")
    batch, classes = scores.shape
    if labels and len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for {classes} classes")
    count = min(k, classes)
    order = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :count]
    integral = scores.dtype.kind in "iub"
    elements: list[bytes] = []
    for row, indices in zip(scores.tolist(), order.tolist(), strict=True):
        for index in indices:
            value = row[index]
            text = f"{int(value)}:{index}" if integral else f"{value:f}:{index}"
            if labels:
                text = f"{text}:{labels[index]}"
            elements.append(text.encode("utf-8"))
    return OutputTensor(name=name, datatype="BYTES", shape=(batch, count), data=elements)


@dataclass(frozen=True, slots=True)
class RepositoryRequest:
    """A model repository extension request (index, load, unload): its JSON body."""

    ready_only: bool = False  # the index's ``ready``: list only the ready models
    parameters: tuple[str, ...] = ()  # the names of a load's or unload's parameters


def decode_repository_request(body: bytes) -> RepositoryRequest:
    """An index, load or unload body: empty (as `tritonclient` sends it), or a JSON
    object with ``ready`` (index), ``repository_name`` and ``parameters``.

    Raises:
        V2InputError: Not a JSON object, or a field of the wrong type.
    """
    if not body.strip():
        return RepositoryRequest()
    document = _parse_json(body, "")
    if not isinstance(document, dict):
        raise V2InputError(f"The request must be a JSON object, not {_kind_of(document)}.")
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise V2InputError(f"'ready' must be true or false, not {_kind_of(ready)}.")
    name = document.get("repository_name", "")
    if not isinstance(name, str):
        raise V2InputError(f"'repository_name' must be a string, not {_kind_of(name)}.")
    return RepositoryRequest(ready, tuple(_parameters(document, "The request's")))


def error_body(message: str) -> bytes:
    """The protocol's error body, ``{"error": "<message>"}``, which clients such as
    ``tritonclient`` read the message from."""
    return json.dumps({"error": message}).encode("utf-8")


# --- Decoding ------------------------------------------------------------------------


class _BinarySection:
    """The bytes after the JSON header, handed out to binary inputs in order."""

    def __init__(self, view: memoryview, *, declared: bool) -> None:
        self.view = view
        self.declared = declared
        self.offset = 0

    def take(self, size: int, label: str) -> memoryview:
        remaining = len(self.view) - self.offset
        if size > remaining:
            hint = "" if self.declared else _NOT_JSON_HINT
            raise V2InputError(
                f"{label} declares binary_data_size {size} but only {remaining} bytes of "
                f"binary data are left after the JSON header{hint}."
            )
        chunk = self.view[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        left = len(self.view) - self.offset
        if left:
            raise V2InputError(
                f"{left} bytes after the JSON header belong to no input: the inputs' "
                f"binary_data_size values add up to {self.offset} of the "
                f"{len(self.view)} bytes that follow it."
            )


class ElementBudget:
    """The elements a request's inputs may still hold: a bound checked from the shapes
    before any tensor is built. ``BYTES`` elements have a bound of their own: each is
    split out as a Python object (an encoded image, here), so a body of millions of
    empty ones would cost seconds of CPU where as many numbers cost a copy."""

    def __init__(self, limit: int, bytes_limit: int | None = None) -> None:
        """Allow ``limit`` elements in all, of which at most ``bytes_limit`` (default
        ``limit``) ``BYTES`` elements."""
        self.limit = limit
        self.bytes_limit = limit if bytes_limit is None else bytes_limit
        self.used = 0
        self.bytes_used = 0

    def spend(self, count: int, label: str, *, bytes_elements: bool = False) -> None:
        """Charge ``count`` elements of the input ``label`` (``BYTES`` ones when
        ``bytes_elements``).

        Raises:
            V2InputError: The request's inputs now hold more than a limit.
        """
        self.used += count
        if self.used > self.limit:
            raise V2InputError(
                f"{label} has {count} elements, which takes the request to {self.used}; "
                f"at most {self.limit} elements are accepted."
            )
        if bytes_elements:
            self.bytes_used += count
            if self.bytes_used > self.bytes_limit:
                raise V2InputError(
                    f"{label} has {count} BYTES elements, which takes the request to "
                    f"{self.bytes_used}; at most {self.bytes_limit} BYTES elements are accepted "
                    "(each is an image: MAX_IMAGES_PER_REQUEST)."
                )


def _parse_json(header: bytes, hint: str) -> Any:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise V2InputError(
            f"The request's JSON is not valid UTF-8 (at byte {exc.start}){hint}."
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise V2InputError(
            f"The request is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}{hint}."
        ) from None
    except ValueError:  # Python converts no integer of over 4,300 digits
        raise V2InputError(
            f"The request's JSON holds an integer of over {sys.get_int_max_str_digits()} digits."
        ) from None
    except RecursionError:
        raise V2InputError("The request's JSON is nested too deeply.") from None


def _refuse_constant(name: str) -> NoReturn:
    raise V2InputError(
        f"The request's JSON holds {name}, which JSON does not allow; "
        "NaN and infinities are refused."
    )


def _parameters(holder: dict[str, Any], owner: str) -> dict[str, Any]:
    """``holder``'s ``parameters`` object; ``owner`` begins the message (``"Input 'x':"``)."""
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise V2InputError(f"{owner} 'parameters' must be an object, not {_kind_of(parameters)}.")
    return parameters


def _decode_input(
    item: Any, position: int, section: _BinarySection, budget: ElementBudget
) -> InputTensor:
    if not isinstance(item, dict):
        raise V2InputError(f"inputs[{position}] must be an object, not {_kind_of(item)}.")
    name, datatype, label, shape, count = _tensor_header(
        item.get("name"), item.get("datatype"), item.get("shape"), position, budget
    )

    parameters = _parameters(item, f"{label}:")
    if "shared_memory_region" in parameters:
        raise V2InputError(f"{label} asks for shared memory, which this server does not offer.")
    has_data = "data" in item
    has_binary = "binary_data_size" in parameters
    if has_data and has_binary:
        raise V2InputError(
            f"{label} sets both 'data' and 'parameters.binary_data_size'; it must set one."
        )
    if has_binary:
        size = parameters["binary_data_size"]
        if not _is_int(size) or size < 0:
            raise V2InputError(
                f"{label}: binary_data_size must be a non-negative integer, not {size!r}."
            )
        chunk = section.take(size, label)
        data = _from_binary(chunk, datatype, shape, count, label)
    elif has_data:
        data = _from_json(item["data"], datatype, shape, count, label)
    else:
        raise V2InputError(f"{label} has neither 'data' nor 'parameters.binary_data_size'.")
    return InputTensor(name=name, datatype=datatype, shape=shape, data=data)


class _Header(NamedTuple):
    """An input's checked name, datatype and shape; ``label`` names it in messages."""

    name: str
    datatype: str
    label: str
    shape: tuple[int, ...]
    elements: int


def _tensor_header(
    name: Any, datatype: Any, shape_value: Any, position: int, budget: ElementBudget
) -> _Header:
    """Check an input's name, datatype and shape and charge its elements to the budget."""
    if not isinstance(name, str) or not name:
        raise V2InputError(f"inputs[{position}] needs a non-empty string 'name'.")
    label = f"Input {name[:64]!r}"
    if not isinstance(datatype, str):
        raise V2InputError(f"{label} needs a string 'datatype'.")
    if datatype not in DATATYPES:
        raise V2InputError(
            f"{label} has unknown datatype {datatype[:32]!r}; known: {', '.join(DATATYPES)}."
        )
    shape = _shape(shape_value, label)
    for index, dim in enumerate(shape):
        if dim > budget.limit:  # only a zero elsewhere could make it fit: never useful
            raise V2InputError(
                f"{label}: shape {_brief(list(shape))} has dimension {index} = {dim}; no "
                f"dimension may exceed {budget.limit}, the most elements a request may hold."
            )
    count = math.prod(shape)
    budget.spend(count, label, bytes_elements=datatype == "BYTES")
    return _Header(name, datatype, label, shape, count)


def decode_raw_input(
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: bytes,
    *,
    position: int,
    budget: ElementBudget,
) -> InputTensor:
    """One input given as raw bytes (gRPC's ``raw_input_contents``): laid out as the
    binary data extension lays out a tensor.

    Raises:
        V2InputError: The name, datatype or shape is unusable, the elements exceed the
            budget, or the bytes do not hold exactly the tensor the shape describes.
    """
    _, _, label, dims, count = _tensor_header(name, datatype, list(shape), position, budget)
    data = _from_binary(memoryview(raw), datatype, dims, count, label)
    return InputTensor(name=name, datatype=datatype, shape=dims, data=data)


def decode_typed_input(
    name: str,
    datatype: str,
    shape: Sequence[int],
    values: Sequence[Any],
    *,
    position: int,
    budget: ElementBudget,
) -> InputTensor:
    """One input given as a list of elements in row-major order (gRPC's typed
    ``contents``): numbers for numeric datatypes, `bytes` for BYTES.

    Raises:
        V2InputError: The name, datatype or shape is unusable, the elements exceed the
            budget or are not as many as the shape holds, or a value is NaN or infinite.
    """
    _, _, label, dims, count = _tensor_header(name, datatype, list(shape), position, budget)
    if len(values) != count:
        raise V2InputError(
            f"{label}: its contents hold {len(values)} elements but its shape "
            f"{list(dims)} holds {count}."
        )
    dtype = DATATYPES[datatype]
    if dtype is None:
        return InputTensor(name=name, datatype=datatype, shape=dims, data=list(values))
    try:
        array = np.array(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        raise V2InputError(f"{label}: its contents hold a value that is not {datatype}.") from None
    _check_values(array, datatype, label)
    return InputTensor(name=name, datatype=datatype, shape=dims, data=_frozen(array.reshape(dims)))


def _shape(value: Any, label: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise V2InputError(f"{label} needs a 'shape' array of dimensions.")
    if len(value) > MAX_DIMENSIONS:
        raise V2InputError(
            f"{label}: shape has {len(value)} dimensions; at most {MAX_DIMENSIONS} are accepted."
        )
    for index, dim in enumerate(value):
        if not _is_int(dim) or dim < 0:
            raise V2InputError(
                f"{label}: shape {_brief(value)} has dimension {index} = {dim!r}; "
                "dimensions are non-negative integers."
            )
    return tuple(value)


def _from_binary(
    chunk: memoryview, datatype: str, shape: tuple[int, ...], count: int, label: str
) -> npt.NDArray[Any] | list[bytes]:
    dtype = DATATYPES[datatype]
    if dtype is None:
        return _split_bytes(chunk, shape, count, label)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise V2InputError(
            f"{label} is {datatype} {list(shape)}: {count} elements of {dtype.itemsize} "
            f"bytes make {expected} bytes, but its binary_data_size is {len(chunk)}."
        )
    array = np.frombuffer(chunk, dtype=dtype)
    if not array.flags.aligned:
        array = array.copy()
    _check_values(array, datatype, label)
    return _frozen(array.reshape(shape))


def _split_bytes(chunk: memoryview, shape: tuple[int, ...], count: int, label: str) -> list[bytes]:
    end = len(chunk)
    if end < 4 * count:
        raise V2InputError(
            f"{label} is BYTES {list(shape)}: its {count} elements need at least "
            f"{4 * count} bytes of length prefixes, but its binary_data_size is {end}."
        )
    elements: list[bytes] = []
    offset = 0
    for index in range(count):
        if offset + 4 > end:
            raise V2InputError(
                f"{label}: element {index}'s 4-byte length prefix is cut off at byte "
                f"{offset} of its {end} bytes of binary data."
            )
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += 4
        if length > end - offset:
            raise V2InputError(
                f"{label}: element {index}'s length prefix says {length} bytes but only "
                f"{end - offset} bytes of its binary data are left."
            )
        elements.append(chunk[offset : offset + length].tobytes())
        offset += length
    if offset != end:
        raise V2InputError(
            f"{label}: {end - offset} bytes of its binary data are left over after the "
            f"{count} elements its shape {list(shape)} holds."
        )
    return elements


def _from_json(
    data: Any, datatype: str, shape: tuple[int, ...], count: int, label: str
) -> npt.NDArray[Any] | list[bytes]:
    if not isinstance(data, list):
        raise V2InputError(f"{label}: 'data' must be an array, not {_kind_of(data)}.")
    flat = _flatten(data, shape, count, label)
    dtype = DATATYPES[datatype]
    if dtype is None:
        return _bytes_from_json(flat, label)
    return _numbers_from_json(flat, dtype, datatype, shape, label)


def _flatten(data: list[Any], shape: tuple[int, ...], count: int, label: str) -> list[Any]:
    """``data`` flat in row-major order: given flat, or nested exactly as ``shape``."""
    if list not in set(map(type, data)):
        if len(data) != count:
            raise V2InputError(
                f"{label}: 'data' holds {len(data)} elements but its shape "
                f"{list(shape)} holds {count}."
            )
        return data
    if not shape:
        raise V2InputError(f"{label}: 'data' is nested but its shape [] is a scalar.")
    rows: list[Any] = [data]
    for depth, size in enumerate(shape):
        for row in rows:
            if not isinstance(row, list):
                raise V2InputError(
                    f"{label}: nested 'data' does not match its shape {list(shape)}: "
                    f"at depth {depth} an array of {size} is expected, found {_kind_of(row)}."
                )
            if len(row) != size:
                raise V2InputError(
                    f"{label}: nested 'data' does not match its shape {list(shape)}: "
                    f"at depth {depth} an array of {size} is expected, found one of {len(row)}."
                )
        rows = list(chain.from_iterable(rows))
    if list in set(map(type, rows)):
        raise V2InputError(f"{label}: nested 'data' is nested deeper than its shape {list(shape)}.")
    return rows


def _numbers_from_json(
    flat: list[Any], dtype: np.dtype[Any], datatype: str, shape: tuple[int, ...], label: str
) -> npt.NDArray[Any]:
    if datatype == "BOOL":
        allowed: set[type] = {bool}
    elif dtype.kind in "iu":
        allowed = {int}
    else:
        allowed = {int, float}
    wrong = set(map(type, flat)) - allowed
    if wrong:
        found = " and ".join(sorted(_JSON_KINDS.get(kind, kind.__name__) for kind in wrong))
        takes = " or ".join(sorted(_JSON_KINDS[kind] for kind in allowed))
        raise V2InputError(f"{label} is {datatype}, which takes {takes}, but 'data' holds {found}.")
    if dtype.kind in "iu" and flat:
        info = np.iinfo(dtype)
        for value in (min(flat), max(flat)):
            if not info.min <= value <= info.max:
                raise V2InputError(
                    f"{label}: value {value} is outside {datatype}'s range "
                    f"[{info.min}, {info.max}]."
                )
    if dtype.kind == "f":
        try:
            wide = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise V2InputError(f"{label} holds an integer too large for {datatype}.") from None
        with np.errstate(over="ignore"):
            array = wide.astype(dtype)
        _check_values(array, datatype, label)
    else:
        array = np.array(flat, dtype=dtype)
    return _frozen(array.reshape(shape))


def _bytes_from_json(flat: list[Any], label: str) -> list[bytes]:
    elements: list[bytes] = []
    for index, item in enumerate(flat):
        if isinstance(item, str):
            try:
                elements.append(item.encode("utf-8"))
            except UnicodeEncodeError:
                raise V2InputError(
                    f"{label}: element {index} is not valid Unicode (it holds a lone "
                    'surrogate escape); send such bytes as {"b64": ...} or in binary.'
                ) from None
        elif isinstance(item, dict):
            encoded = item.get("b64")
            if set(item) != {"b64"} or not isinstance(encoded, str):
                raise V2InputError(
                    f"{label}: element {index} is an object; a BYTES object must be "
                    '{"b64": "<base64 text>"} and nothing else.'
                )
            try:
                elements.append(base64.b64decode(encoded, validate=True))
            except ValueError as exc:
                raise V2InputError(
                    f"{label}: element {index}'s 'b64' is not valid base64 ({exc})."
                ) from None
        else:
            raise V2InputError(
                f'{label} is BYTES, which takes strings or {{"b64": ...}} objects, but '
                f"element {index} is {_kind_of(item)}."
            )
    return elements


def _check_values(array: npt.NDArray[Any], datatype: str, label: str) -> None:
    """Refuse values the datatype does not allow: BOOL bytes other than 0 and 1, and
    NaN or infinities in floating-point tensors (the gateway's models never want them)."""
    if array.size == 0:
        return
    if datatype == "BOOL":
        raw = array.view(np.uint8)
        if int(raw.max()) > 1:
            index = int(np.flatnonzero(raw > 1)[0])
            raise V2InputError(
                f"{label}: element {index} is the byte {int(raw[index])}; BOOL bytes are 0 or 1."
            )
    elif array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            index = int(np.flatnonzero(~finite)[0])
            raise V2InputError(
                f"{label}: element {index} is {float(array[index])} as {datatype}; "
                "NaN and infinities are refused."
            )


def _decode_outputs(value: Any) -> tuple[RequestedOutput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise V2InputError(f"'outputs' must be an array, not {_kind_of(value)}.")
    outputs: list[RequestedOutput] = []
    names: set[str] = set()
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise V2InputError(f"outputs[{position}] must be an object, not {_kind_of(item)}.")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise V2InputError(f"outputs[{position}] needs a non-empty string 'name'.")
        label = f"Output {name[:64]!r}"
        if name in names:
            raise V2InputError(f"{label} is requested more than once.")
        names.add(name)
        parameters = _parameters(item, f"{label}:")
        if "shared_memory_region" in parameters:
            raise V2InputError(f"{label} asks for shared memory, which this server does not offer.")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise V2InputError(
                f"{label}: binary_data must be true or false, not {_kind_of(binary)}."
            )
        classification = parameters.get("classification")
        if classification is not None and (not _is_int(classification) or classification < 0):
            raise V2InputError(
                f"{label}: classification must be a non-negative class count, "
                f"not {classification!r}."
            )
        outputs.append(
            RequestedOutput(name=name, binary=binary, classification=classification or None)
        )
    return tuple(outputs)


# --- Encoding ------------------------------------------------------------------------


def _output_array(tensor: OutputTensor) -> npt.NDArray[Any]:
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise ValueError(f"output {tensor.name!r}: {tensor.datatype!r} is not a numeric datatype")
    array = tensor.data
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"output {tensor.name!r} is {tensor.datatype} but its data is {found}")
    if array.size != math.prod(tensor.shape):
        raise ValueError(
            f"output {tensor.name!r} has {array.size} elements for shape {list(tensor.shape)}"
        )
    return array


def _output_elements(tensor: OutputTensor) -> list[bytes]:
    data = tensor.data
    elements = data.ravel().tolist() if isinstance(data, np.ndarray) else data
    if len(elements) != math.prod(tensor.shape):
        raise ValueError(
            f"output {tensor.name!r} has {len(elements)} elements for shape {list(tensor.shape)}"
        )
    if not all(isinstance(element, bytes) for element in elements):
        raise ValueError(f"output {tensor.name!r} is BYTES but holds elements that are not bytes")
    return elements


def raw_output_bytes(tensor: OutputTensor) -> memoryview:
    """An output's data as the protocol's raw bytes: numbers little-endian in row-major
    order, each BYTES element as a 4-byte little-endian length and its bytes.

    Raises:
        ValueError: The data does not match the datatype or shape (a bug).
    """
    if tensor.datatype == "BYTES":
        elements = _output_elements(tensor)
        prefixed = chain.from_iterable((_LENGTH_PREFIX.pack(len(e)), e) for e in elements)
        return memoryview(b"".join(prefixed))
    return np.ascontiguousarray(_output_array(tensor)).data.cast("B")


def _output_json(tensor: OutputTensor) -> list[Any]:
    if tensor.datatype == "BYTES":
        try:
            return [element.decode("utf-8") for element in _output_elements(tensor)]
        except UnicodeDecodeError:
            raise ValueError(
                f"output {tensor.name!r} holds bytes that are not UTF-8; JSON cannot carry "
                "them, binary data can"
            ) from None
    array = _output_array(tensor)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ModelInferenceException(
            f"Output {tensor.name!r} holds NaN or infinite values, which JSON cannot carry."
        )
    values: list[Any] = array.ravel().tolist()
    return values


# --- Small helpers -------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    """A JSON integer (``true`` and ``false`` are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


def _kind_of(value: Any) -> str:
    """The JSON type of a value, as a message names it."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "an object",
        list: "an array",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _brief(value: list[Any]) -> str:
    text = json.dumps(value)
    return text if len(text) <= 64 else f"{text[:61]}..."
