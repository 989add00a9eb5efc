"""The hostile and malformed input catalogue: every case gets its documented answer.

Each case is sent to an app with the real model on the default backend (ONNX Runtime,
as users run it). The valid-but-unusual images must get a 200 with a sensible result;
everything else a 4xx problem+json with its ``type`` (never a 5xx, never a hang).
After every case the server is still ready, the metrics hold no series they did not
hold before (only the per-class prediction counter may grow, bounded by the model's
1,000 classes), and the request logged exactly one line, at INFO for a 200 and WARNING
for a 4xx. docs/operations.md lists the same answers.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests import scrape
from tests.helpers import json_log_capture, ready_client, real_app
from tests.images import CAT_CLASSES, CAT_PNG, cat_jpeg, encode, gradient

PROBLEM = "application/problem+json"
MAX_BODY = 2 * 1024 * 1024
BOUNDARY = "catalogueboundary"
#: The only metric allowed to gain series during the catalogue (label: the top-1 class).
GROWS_WITH_ANSWERS = "model_predictions_total"


def _cat() -> Image.Image:
    with Image.open(CAT_PNG) as image:
        return image.convert("RGB")


def _multipart(parts: list[bytes], boundary: str = BOUNDARY) -> bytes:
    return b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts) + (
        f"--{boundary}--\r\n".encode()
    )


def _file_part(data: bytes, filename: bytes = b"cat.jpg", name: str = "file") -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="'.encode()
        + filename
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
    )


def _field_part(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


def _png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG that declares 900 megapixels and carries 1 KiB of data."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _gif_bomb() -> bytes:
    """A GIF whose logical screen and frame are 65535x65535 with a few bytes of data."""
    gif = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    gif[6:10] = (65535).to_bytes(2, "little") * 2
    descriptor = gif.index(b",")
    gif[descriptor + 5 : descriptor + 9] = (65535).to_bytes(2, "little") * 2
    return bytes(gif)


def _corrupt_png() -> bytes:
    """A real PNG whose compressed pixel data has been overwritten mid-stream."""
    data = bytearray(encode(gradient(), "PNG"))
    start = data.index(b"IDAT") + 40
    data[start : start + 200] = b"\x5a" * 200
    return bytes(data)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", cat_jpeg())
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [_cat().convert("P"), gradient(451, 300).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _multi_frame_tiff() -> bytes:
    return encode(_cat(), "TIFF", save_all=True, append_images=[gradient(451, 300)])


def _exif_rotated_jpeg() -> bytes:
    """The cat stored on its side, with EXIF orientation 6 saying how to stand it up."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encode(_cat().transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=90)


def _palette_with_transparency() -> bytes:
    image = _cat().quantize(colors=64)
    return encode(image, "PNG", transparency=0)


def _over_size_chunks() -> Iterator[bytes]:
    for _ in range(64):  # 16 MiB offered in 256 KiB chunks; the limit is 2 MiB
        yield b"\x00" * (256 * 1024)


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    name: str
    status: int
    slug: str | None = None  # the problem type of a 4xx
    body: bytes | Callable[[], Iterator[bytes]] = b""
    content_type: str | None = "image/jpeg"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cat: bool = False  # a 200 whose top 5 must hold a cat class

    def send(self, client: TestClient) -> object:
        headers = dict(self.headers)
        if self.content_type is not None:
            headers["content-type"] = self.content_type
        content = self.body() if callable(self.body) else self.body
        return client.post(f"/predict{self.query}", content=content, headers=headers)


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CASES = [
    # --- bodies that are not images
    Case("empty-body", 400, "invalid-image", b""),
    Case("no-content-type", 415, "unsupported-media-type", cat_jpeg(), None),
    Case("text-declared-as-text", 415, "unsupported-media-type", b"hello", "text/plain"),
    Case("json-body", 415, "unsupported-media-type", b'{"image": "x"}', "application/json"),
    Case(
        "gzip-compressed-upload", 415, "unsupported-media-type", gzip.compress(cat_jpeg()),
        headers={"content-encoding": "gzip"},
    ),
    Case(
        "deflate-then-identity-encodings", 415, "unsupported-media-type", cat_jpeg(),
        headers={"content-encoding": "deflate, identity"},
    ),
    Case("xml-body", 415, "unsupported-media-type", b"<?xml version='1.0'?><a/>", "application/xml"),
    Case("text-declared-as-jpeg", 400, "invalid-image", b"just some text"),
    Case("html-declared-as-jpeg", 400, "invalid-image", b"<!doctype html><html><body>hi</body></html>"),
    Case("svg-declared-as-svg", 400, "invalid-image",
         b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "image/svg+xml"),
    Case("zip-declared-as-octets", 400, "invalid-image", _zip(), "application/octet-stream"),
    # --- broken images
    Case("truncated-jpeg", 400, "invalid-image", cat_jpeg()[:3000]),
    Case("truncated-png", 400, "invalid-image", encode(gradient(), "PNG")[:600], "image/png"),
    Case("corrupt-png-data", 400, "invalid-image", _corrupt_png(), "image/png"),
    Case("jpeg-header-then-garbage", 400, "invalid-image", b"\xff\xd8\xff\xe0" + b"\x13" * 500),
    Case("png-signature-then-garbage", 400, "invalid-image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"),
    # --- images over the limits
    Case("png-decompression-bomb", 400, "image-too-large", _png_bomb(), "image/png"),
    Case("gif-decompression-bomb", 400, "image-too-large", _gif_bomb(), "image/gif"),
    Case("side-over-limit-1x200000", 400, "image-too-large",
         encode(Image.new("L", (1, 20_000)), "PNG"), "image/png"),
    Case("body-over-limit-with-length", 413, "payload-too-large", b"\x00" * (MAX_BODY + 1)),
    Case("body-over-limit-chunked", 413, "payload-too-large", _over_size_chunks),
    # --- valid but unusual images: a 200 with a sensible answer
    Case("one-pixel", 200, body=encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), content_type="image/png"),
    Case("extreme-aspect-4000x10", 200, body=encode(gradient(4000, 10), "JPEG")),
    Case("extreme-aspect-10x4000", 200, body=encode(gradient(10, 4000), "PNG"), content_type="image/png"),
    Case("animated-gif", 200, body=_animated_gif(), content_type="image/gif", cat=True),
    Case("multi-frame-tiff", 200, body=_multi_frame_tiff(), content_type="image/tiff", cat=True),
    Case("sixteen-bit-png", 200, body=encode(gradient().convert("I").convert("I;16"), "PNG"), content_type="image/png"),
    Case("cmyk-jpeg", 200, body=encode(_cat().convert("CMYK"), "JPEG", quality=90), cat=True),
    Case("palette-with-transparency", 200, body=_palette_with_transparency(), content_type="image/png", cat=True),
    Case("exif-rotated-jpeg", 200, body=_exif_rotated_jpeg(), cat=True),
    # --- multipart abuse
    Case("multipart-no-file", 400, "invalid-input", _multipart([_field_part("other", "x")]), MULTIPART),
    Case("multipart-two-files", 400, "invalid-input",
         _multipart([_file_part(cat_jpeg()), _file_part(cat_jpeg(), b"b.jpg")]), MULTIPART),
    Case("multipart-hundreds-of-fields", 400, "invalid-input",
         _multipart([_field_part(f"f{i}", "v") for i in range(300)]), MULTIPART),
    Case("multipart-huge-filename", 200, body=_multipart([_file_part(cat_jpeg(), b"a" * 8000 + b".jpg")]),
         content_type=MULTIPART, cat=True),
    Case("multipart-part-headers-over-16k", 400, "invalid-input",
         _multipart([_file_part(cat_jpeg(), b"a" * 20_000 + b".jpg")]), MULTIPART),
    Case("multipart-non-utf8-filename", 200, body=_multipart([_file_part(cat_jpeg(), b"\xff\xfe\xc3(.jpg")]),
         content_type=MULTIPART, cat=True),
    Case("multipart-no-closing-boundary", 400, "invalid-input",
         f"--{BOUNDARY}\r\n".encode() + _file_part(cat_jpeg()), MULTIPART),
    Case("multipart-without-boundary", 400, "invalid-input", b"--x\r\n\r\n", "multipart/form-data"),
    Case("multipart-text-file", 400, "invalid-image",
         _multipart([_file_part(b"plain text, not a picture")]), MULTIPART),
    # --- bad parameters
    Case("top-k-zero", 422, "validation-error", cat_jpeg(), query="?top_k=0"),
    Case("top-k-21", 422, "validation-error", cat_jpeg(), query="?top_k=21"),
    Case("top-k-not-a-number", 422, "validation-error", cat_jpeg(), query="?top_k=abc"),
    Case("timeout-header-not-a-number", 400, "invalid-input", cat_jpeg(),
         headers={"x-request-timeout-ms": "soon"}),
    Case("timeout-header-negative", 400, "invalid-input", cat_jpeg(), headers={"x-request-timeout-ms": "-5"}),
    # A float cannot hold 10^400 (OverflowError), nor int() read 5,000 digits (ValueError).
    Case("timeout-header-1e400", 400, "invalid-input", cat_jpeg(),
         headers={"x-request-timeout-ms": "1" + "0" * 400}),
    Case("timeout-header-5000-digits", 400, "invalid-input", cat_jpeg(),
         headers={"x-request-timeout-ms": "9" * 5000}),
    Case("timeout-header-a-day", 200, body=cat_jpeg(), cat=True,
         headers={"x-request-timeout-ms": "86400000"}),
    # --- hostile headers: ignored or replaced, the prediction still answers
    Case("traceparent-malformed", 200, body=cat_jpeg(), headers={"traceparent": "00-zz-!!-01"}, cat=True),
    Case("traceparent-oversized", 200, body=cat_jpeg(),
         headers={"traceparent": "00-" + "a" * 8000 + "-" + "b" * 16 + "-01"}, cat=True),
    Case("request-id-oversized", 200, body=cat_jpeg(), headers={"x-request-id": "r" * 8000}, cat=True),
    Case("request-id-with-json-and-spaces", 200, body=cat_jpeg(),
         headers={"x-request-id": '"}, {"level": "CRITICAL'}, cat=True),
    Case("user-id-oversized", 200, body=cat_jpeg(), headers={"x-user-id": "u" * 8000}, cat=True),
    Case("user-id-with-control-characters", 200, body=cat_jpeg(),
         headers={"x-user-id": "eve\tadmin"}, cat=True),
]  # fmt: skip


@pytest.fixture(scope="module")
def log_stream() -> Iterator[io.StringIO]:
    """Every log record of the module's app, as JSON lines."""
    with json_log_capture() as stream:
        yield stream


@pytest.fixture(scope="module")
def client(log_stream: io.StringIO) -> Iterator[TestClient]:
    """The real model on the default backend behind the whole stack, 2 MiB body limit."""
    with TestClient(real_app(max_body_bytes=MAX_BODY)) as test_client:
        ready_client(test_client)
        # Warm up: one answer and one scrape create the series normal traffic creates.
        ok = test_client.post(
            "/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
        )
        assert ok.status_code == 200
        assert ok.json()["model"]["backend"] == "onnxruntime"
        test_client.get("/metrics")
        yield test_client


def _series(client: TestClient) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return set(scrape.parse(client.get("/metrics").text))


@pytest.fixture(scope="module")
def baseline_series(client: TestClient) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return _series(client)


def test_the_catalogue_covers_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_hostile_input_gets_its_documented_answer(
    case: Case,
    client: TestClient,
    log_stream: io.StringIO,
    baseline_series: set[tuple[str, frozenset[tuple[str, str]]]],
) -> None:
    logged_before = len(log_stream.getvalue())
    response = case.send(client)
    assert response.status_code == case.status, response.text  # type: ignore[attr-defined]
    request_id = response.headers["x-request-id"]  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    if case.status == 200:
        predictions = body["predictions"]
        assert len(predictions) == 5
        assert all(0 <= p["confidence"] <= 1 for p in predictions)
        if case.cat:
            assert CAT_CLASSES & {p["class_id"] for p in predictions}, predictions
        assert len(body["trace_id"]) == 32
        assert case.headers.get("traceparent", "")[3:35] != body["trace_id"]
    else:
        assert 400 <= case.status < 500
        assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
        assert body["type"] == f"urn:inference-gateway:problem:{case.slug}"
        assert body["status"] == case.status
        assert body["request_id"] == request_id
    # The id is ours when the client's is not a sane token.
    sent_id = case.headers.get("x-request-id")
    if sent_id is not None:
        assert request_id != sent_id and len(request_id) == 36

    # Exactly one line for the request, at the level its status calls for.
    new_text = log_stream.getvalue()[logged_before:]
    lines = [json.loads(line) for line in new_text.splitlines() if line]
    mine = [r for r in lines if r.get("request_id") == request_id]
    assert len(mine) == 1, mine
    assert mine[0]["level"] == ("INFO" if case.status == 200 else "WARNING")
    assert mine[0]["status_code"] == case.status
    assert "user_id" not in mine[0]

    # Still ready, and no new series beyond answers' classes.
    assert client.get("/ready").status_code == 200
    added = {name for name, _ in _series(client) - baseline_series}
    assert added <= {GROWS_WITH_ANSWERS, "model_predictions_created"}, added
