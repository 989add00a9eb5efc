"""Load test of the gateway: real photos, a few bad inputs and health checks.

Normally run by ``scripts/load_test.sh`` (see docs/load-testing.md); by hand:

    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Each simulated user sends, by weight:

- 85%: a real photograph to ``POST /predict``, as multipart field ``file`` or as the raw
  body (``content-type: image/jpeg``), at one of three sizes: the photo's native size
  (about 500 px), a 224 px thumbnail or a 1920x1080 upscale;
- 5%: a bad input the gateway must refuse with a precise status (text declared as a
  JPEG, a truncated JPEG, an empty body: 400; ``top_k=0``: 422). Getting exactly that
  status is a success, as the SLO counts it; anything else is a failure;
- 10%: ``GET /health`` or ``GET /ready``.

The photos are scikit-image's bundled sample photographs, or the JPEG and PNG files of
the directory named by ``LOADTEST_IMAGES``. Each is decoded and re-encoded as JPEG at the
three sizes once, when the file is loaded, so the load generator only sends bytes.
``LOADTEST_WAIT`` sets each user's pause between requests, ``MIN,MAX`` seconds
(default ``0.1,0.5``).

Entries in locust's statistics: ``/predict [photo native]``, ``/predict [photo 224px]``,
``/predict [photo 1920x1080]``, ``/predict [bad input]``, ``/health`` and ``/ready``;
``loadtest/slo_summary.py`` reads them by these names.
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
from PIL import Image, ImageOps

#: scikit-image's colour photographs used when LOADTEST_IMAGES is not set.
DEFAULT_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
JPEG_QUALITY = 90
THUMBNAIL_SIDE = 224
FULL_HD = (1920, 1080)

#: Size label -> relative weight among the photo requests.
SIZE_WEIGHTS = {"native": 5, f"{THUMBNAIL_SIDE}px": 3, f"{FULL_HD[0]}x{FULL_HD[1]}": 2}
#: Share of photo uploads sent as multipart; the rest go as the raw request body.
MULTIPART_SHARE = 0.7

PHOTO_WEIGHT = 85
BAD_INPUT_WEIGHT = 5
HEALTH_WEIGHT = 10

#: Sent with every request so the gateway's logs tell load-test traffic apart.
USER_ID = "loadtest"

BAD_INPUT_NAME = "/predict [bad input]"


def photo_entry(size: str) -> str:
    """The locust statistics entry of photo predictions of one size."""
    return f"/predict [photo {size}]"


@dataclass(frozen=True)
class Photo:
    """One photograph encoded as JPEG at one size."""

    source: str
    size: str
    data: bytes


@dataclass(frozen=True)
class BadInput:
    """A request the gateway must refuse with ``expected`` status."""

    label: str
    body: bytes
    content_type: str
    expected: int
    params: dict[str, str] = field(default_factory=dict)


def _source_paths() -> list[Path]:
    directory = os.environ.get("LOADTEST_IMAGES", "").strip()
    if directory:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise RuntimeError(f"LOADTEST_IMAGES={directory}: not a directory")
        paths = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
        )
        if not paths:
            raise RuntimeError(f"LOADTEST_IMAGES={directory}: no .jpg, .jpeg or .png file")
        return paths
    import skimage.data

    bundled = Path(skimage.data.__file__).parent
    return [bundled / name for name in DEFAULT_PHOTOS if (bundled / name).is_file()]


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _sizes(image: Image.Image) -> dict[str, Image.Image]:
    """The native image, a thumbnail and a 1920x1080 picture cropped from an upscale."""
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    full_hd = ImageOps.fit(image, FULL_HD, Image.Resampling.BICUBIC)
    return {
        "native": image,
        f"{THUMBNAIL_SIDE}px": thumbnail,
        f"{FULL_HD[0]}x{FULL_HD[1]}": full_hd,
    }


def load_photos() -> dict[str, list[Photo]]:
    """Every source photograph as JPEG at every size, by size label."""
    photos: dict[str, list[Photo]] = {size: [] for size in SIZE_WEIGHTS}
    for path in _source_paths():
        with Image.open(path) as original:
            image = ImageOps.exif_transpose(original).convert("RGB")
        for size, resized in _sizes(image).items():
            photos[size].append(Photo(path.name, size, _jpeg(resized)))
    if not photos["native"]:
        raise RuntimeError("no photographs to send: is scikit-image installed?")
    return photos


def bad_inputs(photo: Photo) -> list[BadInput]:
    """Requests with a known wrong input, made from a real ``photo``."""
    return [
        BadInput("text declared as JPEG", b"this is not an image\n" * 50, "image/jpeg", 400),
        BadInput("truncated JPEG", photo.data[: len(photo.data) // 2], "image/jpeg", 400),
        BadInput("empty body", b"", "image/jpeg", 400),
        BadInput("top_k=0", photo.data, "image/jpeg", 422, {"top_k": "0"}),
    ]


def _wait_range() -> tuple[float, float]:
    raw = os.environ.get("LOADTEST_WAIT", "0.1,0.5")
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise RuntimeError(f"LOADTEST_WAIT={raw}: expected MIN,MAX seconds") from None
    if not 0 <= low <= high:
        raise RuntimeError(f"LOADTEST_WAIT={raw}: expected 0 <= MIN <= MAX")
    return low, high


PHOTOS = load_photos()
BAD_INPUTS = bad_inputs(PHOTOS["native"][0])
WAIT_MIN, WAIT_MAX = _wait_range()
_RNG = random.Random()  # noqa: S311 - picks the traffic mix, not secrets


def _write_final_csv_at_quit(environment: Environment, **_: Any) -> None:
    """Make ``--csv`` files hold the whole run.

    Locust rewrites them once a second while it runs but not after the last requests
    (locustio/locust#2299), so up to a second of the run would be missing from them and
    they would disagree with the printed summary and the HTML report. The ``quit`` event
    comes after the users stopped and before locust closes its files.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)

    def write(**_: Any) -> None:
        for suffix, write_rows in (
            ("_stats.csv", writer.requests_csv),
            ("_failures.csv", writer.failures_csv),
            ("_exceptions.csv", writer.exceptions_csv),
        ):
            with open(f"{prefix}{suffix}", "w", newline="", encoding="utf-8") as handle:
                write_rows(csv.writer(handle))

    environment.events.quit.add_listener(write)  # type: ignore[no-untyped-call]


# Locust's EventHook is not annotated.
events.init.add_listener(_write_final_csv_at_quit)  # type: ignore[no-untyped-call]


def _problem(response: ResponseContextManager) -> str:
    """A short, low-cardinality description of an unexpected answer."""
    if response.status_code == 0:
        return f"no response ({type(response.error).__name__})"
    kind = ""
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        try:
            kind = " " + str(response.json().get("type", "")).rsplit(":", 1)[-1]
        except ValueError:
            kind = ""
    return f"status {response.status_code}{kind}"


class GatewayUser(HttpUser):
    """A client of the gateway: mostly photos, sometimes a mistake, now and then a probe."""

    wait_time = between(WAIT_MIN, WAIT_MAX)

    def on_start(self) -> None:
        self.client.headers["X-User-ID"] = USER_ID

    @task(PHOTO_WEIGHT)
    def predict_photo(self) -> None:
        size = _RNG.choices(list(SIZE_WEIGHTS), weights=list(SIZE_WEIGHTS.values()))[0]
        photo = _RNG.choice(PHOTOS[size])
        request: dict[str, Any] = {"name": photo_entry(size), "catch_response": True}
        if _RNG.random() < MULTIPART_SHARE:
            request["files"] = {"file": (photo.source, photo.data, "image/jpeg")}
        else:
            request["data"] = photo.data
            request["headers"] = {"content-type": "image/jpeg"}
        with self.client.post("/predict", **request) as response:
            if response.status_code != 200:
                response.failure(_problem(response))
                return
            try:
                predictions = response.json().get("predictions")
            except ValueError:
                predictions = None
            if not predictions:
                response.failure("200 without predictions")
            else:
                response.success()

    @task(BAD_INPUT_WEIGHT)
    def predict_bad_input(self) -> None:
        bad = _RNG.choice(BAD_INPUTS)
        with self.client.post(
            "/predict",
            params=bad.params,
            data=bad.body,
            headers={"content-type": bad.content_type},
            name=BAD_INPUT_NAME,
            catch_response=True,
        ) as response:
            if response.status_code == bad.expected:
                response.success()
            else:
                response.failure(f"{bad.label}: expected {bad.expected}, got {_problem(response)}")

    @task(HEALTH_WEIGHT)
    def probe(self) -> None:
        path = _RNG.choice(("/health", "/ready"))
        with self.client.get(path, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(_problem(response))
