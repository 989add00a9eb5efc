"""Streaming extraction of the one image file from a ``multipart/form-data`` body.

python-multipart parses the stream; this keeps only the bytes of the ``file`` part in
memory (no temporary files, no thread hop per chunk) and enforces the limits of the
endpoint as the parts arrive: at most one file, at most ``max_fields`` parts, part
headers no larger than `MAX_PART_HEADER_BYTES`. The body-size limit itself is enforced
upstream, on the stream this reads (`BodySizeLimitMiddleware`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from inference_gateway.errors import InvalidInputException

#: Largest accepted header block of one part (a long filename fits; a flood does not).
MAX_PART_HEADER_BYTES = 16 * 1024


class _FilePart:
    """Parser callbacks that keep the data of the file part named ``field``."""

    def __init__(self, field: str, max_fields: int) -> None:
        self.field = field.encode()
        self.max_fields = max_fields
        self.parts = 0
        self.files = 0
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.capturing = False
        self.chunks: list[bytes] = []
        self.complete = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_fields:
            raise InvalidInputException(
                f"Malformed multipart body: more than {self.max_fields} parts."
            )
        self.disposition = b""
        self.capturing = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"filename" not in options:
            return
        self.files += 1
        if self.files > 1:
            raise InvalidInputException("Malformed multipart body: send exactly one file.")
        self.capturing = options.get(b"name") == self.field

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.capturing:
            self.chunks.append(data[start:end])

    def on_part_end(self) -> None:
        if self.capturing:
            self.complete = True
            self.capturing = False


async def read_file_field(
    stream: AsyncIterator[bytes], content_type: str, field: str, max_fields: int
) -> bytes:
    """The bytes of the file uploaded in ``field``, or `InvalidInputException` (400)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInputException("Malformed multipart body: the boundary is missing.")
    part = _FilePart(field, max_fields)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part.on_part_begin,
            "on_part_data": part.on_part_data,
            "on_part_end": part.on_part_end,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
        },
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise InvalidInputException("Malformed multipart body.") from None
    if part.capturing:
        raise InvalidInputException("Malformed multipart body: the file part is incomplete.")
    if not part.complete:
        raise InvalidInputException(f"The multipart field '{field}' with the image is required.")
    return b"".join(part.chunks)
