"""Everything a real ``serve`` writes, on stdout and stderr together, is one JSON object
per line, even while clients send images that make the decoders complain.

libtiff prints what it finds wrong in a TIFF (``PackBitsDecode: Not enough data for
scanline 0.``) straight to stderr, and Pillow raises Python ``UserWarning``s (``Corrupt
EXIF data``) that Python prints on stderr: once per request, at a client's will. Where a
platform merges the streams, such text breaks every log pipeline that expects JSON.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from tests.servers import GatewayProcess, gateway_process, wait_until

pytestmark = pytest.mark.integration
REQUESTS = 6


def _corrupt_tiff(compression: str) -> bytes:
    """A TIFF whose header is sound and whose strip is zeros: libtiff's decoder fails."""
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF", compression=compression)
    data = bytearray(buffer.getvalue())
    with Image.open(io.BytesIO(bytes(data))) as image:
        offset, count = image.tag_v2[273][0], image.tag_v2[279][0]
    data[offset : offset + count] = bytes(count)
    return bytes(data)


def _corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block claims more entries than it holds: a UserWarning."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera" * 10
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    data = bytearray(buffer.getvalue())
    start = data.find(b"Exif\x00\x00") + 6
    big_endian = data[start : start + 2] == b"MM"
    data[start + 8 : start + 10] = b"\x00\x40" if big_endian else b"\x40\x00"
    return bytes(data)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with gateway_process({"WORKERS": "1"}) as process:
        yield process


def test_decoder_complaints_never_break_one_json_object_per_line(
    gateway: GatewayProcess,
) -> None:
    bodies = [
        *(_corrupt_tiff(c) for c in ("packbits", "tiff_lzw", "tiff_adobe_deflate")),
        _corrupt_exif_jpeg(),
    ]
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        for _ in range(REQUESTS):
            for body in bodies:
                answer = client.post("/predict", content=body, headers={"content-type": "image/*"})
                assert answer.status_code in (200, 400), answer.text
        last = client.post("/predict", content=bodies[-1], headers={"content-type": "image/*"})
    wait_until(
        lambda: last.headers["x-request-id"] in "".join(gateway.log_lines()),
        what="the last request's access line",
    )
    lines = gateway.log_lines()
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not_json == []
    records = [json.loads(line) for line in lines]
    assert not [r for r in records if "Decode" in r.get("message", "")]  # libtiff is silent
    warned = [r for r in records if r.get("logger") == "py.warnings"]
    assert warned, "the EXIF warnings reach the log, as JSON"
    assert all(r["level"] == "WARNING" and "Corrupt EXIF" in r["message"] for r in warned)
    assert len(warned) < REQUESTS + 1  # rate-limited per source, not one per request
    corrupt = [r for r in records if r.get("error_type") == "InvalidImageException"]
    assert len(corrupt) >= 3 * REQUESTS  # every corrupt TIFF still answered and logged


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
