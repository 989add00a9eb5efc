"""Is the model still right? Replays with the real model and real photographs.

The images are variants of scikit-image's nine colour photographs (`tests.photo_variants`:
random crops, flips, small rotations, colour jitter, JPEG quality 70-95). The reference
is 600 variants drawn with one seed, the live traffic 600 drawn with another: the same
world on two days. Why 600 each: at 400 and 400 two samples of one distribution exceed
a PSI of 0.1 on a 10-bucket signal about 2% of the time (PSI x nm/(n+m) is about
chi-squared with 9 degrees of freedom), and with twelve signals that is a test that
fails for one seed in ten; at 600 and 600 it is below 1 in 2,000 per signal. The class
signal's 32 buckets cannot reach 0.1 at these sizes (the mean PSI of pure noise,
31 x (1/600 + 1/600) = 0.10), so it is held to twice that; the alerts' own guard, the
mean plus four standard deviations (`quality.psi_noise`), is checked as well.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from inference_gateway.app import create_app
from inference_gateway.cli import main as cli_main
from inference_gateway.config import Settings
from inference_gateway.inference.catalog import load_version
from inference_gateway.inference.onnx_export import export_to_repository
from inference_gateway.inference.preprocess import ImageLimits
from inference_gateway.inference.profiler import image_files, observe_images
from inference_gateway.inference.quality import (
    ANSWER_SIGNALS,
    CONTINUOUS,
    DRIFT_PSI,
    REFERENCE_FILE,
    SIGNALS,
    Reference,
    load_reference,
    psi,
    psi_noise,
)
from inference_gateway.inference.repository import scan_repository
from tests.helpers import make_settings, ready_client, wait_until
from tests.photo_variants import blurred, darkened, greyscale, jpeg, variants, write_set
from tests.scrape import Samples, parse, total
from tests.servers import gateway_process

pytestmark = pytest.mark.integration

MODEL = "efficientnet-lite0"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
REFERENCE_IMAGES = 600
LIVE_IMAGES = 600
#: Degraded sets: a drifted signal's PSI is far above 0.25 (2 to 6 at 400 images), and
#: The query that asks an answer for its `quality` object.
ASK = {"quality": "true"}
#: 200 live images keep the 10-bucket noise floor (0.17) under the drift threshold.
DEGRADED_IMAGES = 200
#: A class-mix change needs more: the 32-bucket noise floor is under 0.25 from about
#: 430 live images on (against 600 reference images).
ONE_SUBJECT_IMAGES = 500


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A repository serving the built-in model with a reference made by ``profile``,
    and the image sets of the replays."""
    root = tmp_path_factory.mktemp("quality")
    repository = root / "models"
    export_to_repository(repository, Settings(_env_file=None).model_cache_dir)
    sets = {
        "reference": write_set(root / "reference", variants(REFERENCE_IMAGES, seed=1), seed=11),
        "live": write_set(root / "live", variants(LIVE_IMAGES, seed=2), seed=12),
    }
    # The first DEGRADED_IMAGES live images (the same seeds draw the same variants), changed.
    for name, change, quality in (
        ("darkened", darkened, None),
        ("blurred", blurred, None),
        ("jpeg10", None, 10),
        ("greyscale", greyscale, None),
    ):
        write_set(root / name, variants(DEGRADED_IMAGES, seed=2), change, quality=quality, seed=12)
    # Mostly one subject: the cat (photo 1) four times in five.
    cats = list(variants(ONE_SUBJECT_IMAGES * 4 // 5, seed=3, photos=(1,)))
    others = list(variants(ONE_SUBJECT_IMAGES // 5, seed=4))
    write_set(root / "one_subject", iter(cats + others), seed=13)
    assert (
        cli_main(
            ["profile", MODEL, "--images", str(root / "reference"), "--repository", str(repository)]
        )
        == 0
    )
    names = [*sets, "darkened", "blurred", "jpeg10", "greyscale", "one_subject"]
    return {"root": root, "repository": repository, **{k: root / k for k in names}}


def _version_dir(world: dict[str, Path]) -> Path:
    return world["repository"] / MODEL / "1"


def _reference(world: dict[str, Path]) -> Reference:
    version = _version_dir(world)
    reference = load_reference(version, version / "model.onnx")
    assert reference is not None
    return reference


def _live_counts(samples: Samples) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, float]] = {s: {} for s in SIGNALS}
    for (name, labels), value in samples.items():
        if name == "model_quality_observations_total":
            fields = dict(labels)
            counts[fields["signal"]][fields["bucket"]] = value
    return counts


def _minus(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]):  # type: ignore[no-untyped-def]
    return {
        s: {b: v - before[s].get(b, 0.0) for b, v in buckets.items()}
        for s, buckets in after.items()
    }


def _psi_of(counts: dict[str, dict[str, float]], reference: Reference) -> dict[str, float]:
    return {s: psi(counts[s], reference.fractions[s], reference.images) for s in SIGNALS}


def _noise(counts: dict[str, dict[str, float]], reference: Reference, signal: str) -> float:
    n = sum(counts[signal].values())
    return psi_noise(len(reference.buckets(signal)), n, reference.images)


def _post_all(client: TestClient, paths: list[Path]) -> list[dict[str, object]]:
    answers = []
    for path in paths:
        response = client.post(
            "/predict",
            params=ASK,
            files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


@pytest.fixture(scope="module")
def served(world: dict[str, Path]) -> Iterator[TestClient]:
    app = create_app(make_settings(model_repository=world["repository"]), configure_logging=False)
    with TestClient(app) as client:
        yield ready_client(client)


def test_the_same_world_on_another_day_raises_nothing(
    world: dict[str, Path], served: TestClient
) -> None:
    reference = _reference(world)
    assert reference.images == REFERENCE_IMAGES
    before = _live_counts(parse(served.get("/metrics").text))
    answers = _post_all(served, image_files(world["live"]))
    counts = _minus(_live_counts(parse(served.get("/metrics").text)), before)
    assert all(sum(counts[s].values()) == LIVE_IMAGES for s in SIGNALS)
    values = _psi_of(counts, reference)
    print("PSI, same world:", {s: round(v, 3) for s, v in values.items()})
    for signal, value in values.items():
        floor = (len(reference.buckets(signal)) - 1) * (1 / LIVE_IMAGES + 1 / REFERENCE_IMAGES)
        assert value < max(0.1, 2 * floor), (signal, value, floor)
        # ModelInputDrift / ModelPredictionDrift would not fire.
        assert value < DRIFT_PSI or _noise(counts, reference, signal) >= DRIFT_PSI
    # ModelConfidenceDrop would not fire: within three standard errors of the reference.
    confidences = [a["predictions"][0]["confidence"] for a in answers]  # type: ignore[index]
    spread = math.sqrt(1 / len(confidences) + 1 / reference.images)
    threshold = reference.confidence_mean - 3 * reference.confidence_stddev * spread
    assert float(np.mean(confidences)) > threshold
    # Each answer says where it falls; most are typical of the reference.
    quality = answers[0]["quality"]
    assert isinstance(quality, dict) and quality["reference_images"] == REFERENCE_IMAGES
    assert set(quality["signals"]) == set(CONTINUOUS)
    # Not asked for, not sent: the signals are counted all the same.
    photo = image_files(world["live"])[0]
    before = _live_counts(parse(served.get("/metrics").text))
    plain = served.post("/predict", files={"file": ("a.jpg", photo.read_bytes(), "image/jpeg")})
    assert plain.status_code == 200 and plain.json().get("quality") is None
    counts = _minus(_live_counts(parse(served.get("/metrics").text)), before)
    assert all(sum(counts[s].values()) == 1 for s in SIGNALS)


def test_a_darkened_camera_moves_luminance(world: dict[str, Path], served: TestClient) -> None:
    """Through the server: the counters it exports give the drift."""
    reference = _reference(world)
    before = _live_counts(parse(served.get("/metrics").text))
    answers = _post_all(served, image_files(world["darkened"]))
    counts = _minus(_live_counts(parse(served.get("/metrics").text)), before)
    values = _psi_of(counts, reference)
    print("PSI, darkened:", {s: round(v, 3) for s, v in values.items()})
    assert values["luminance"] >= DRIFT_PSI
    assert _noise(counts, reference, "luminance") < DRIFT_PSI  # enough images to alert
    percentiles = [a["quality"]["signals"]["luminance"]["reference_percentile"] for a in answers]  # type: ignore[index]
    # Most are "darker than 75% of the reference" or more (its own range holds dark photos).
    assert float(np.median(percentiles)) < 25


@pytest.mark.parametrize(
    ("images", "signal"),
    [("blurred", "sharpness"), ("jpeg10", "jpeg_quality"), ("greyscale", "saturation"),
     ("one_subject", "class")],
)  # fmt: skip
def test_each_upstream_change_moves_its_signal(
    world: dict[str, Path], images: str, signal: str
) -> None:
    """The same preprocessing and signals as serving, in process (the server's path is
    the darkened test's)."""
    source = scan_repository(world["repository"]).models[MODEL].versions[-1]
    model = load_version(source, 1)
    try:
        observations, skipped = observe_images(model, image_files(world[images]), ImageLimits())
    finally:
        model.backend.close()
    assert not skipped
    reference = model.reference
    assert reference is not None
    counts: dict[str, dict[str, float]] = {s: {} for s in SIGNALS}
    for observation in observations:
        for s, bucket in reference.buckets_of(observation):
            counts[s][bucket] = counts[s].get(bucket, 0) + 1
    values = _psi_of(counts, reference)
    print(f"PSI, {images}:", {s: round(v, 3) for s, v in values.items()})
    assert values[signal] >= DRIFT_PSI, values
    assert _noise(counts, reference, signal) < DRIFT_PSI


def test_a_reference_for_another_model_file_turns_the_signals_off_not_the_model(
    world: dict[str, Path], tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    export_to_repository(repository, Settings(_env_file=None).model_cache_dir)
    data = json.loads((_version_dir(world) / REFERENCE_FILE).read_text())
    data["model_sha256"] = "0" * 64
    (repository / MODEL / "1" / REFERENCE_FILE).write_text(json.dumps(data))
    app = create_app(make_settings(model_repository=repository), configure_logging=False)
    with TestClient(app) as client:
        ready_client(client)
        version = client.get(f"/models/{MODEL}").json()["versions"][0]
        assert version["state"] == "READY"
        assert "written for another model file" in version["reference"]["error"]
        photo = image_files(world["live"])[0]
        answer = client.post(
            "/predict", params=ASK, files={"file": ("a.jpg", photo.read_bytes(), "image/jpeg")}
        )
        assert answer.status_code == 200 and answer.json().get("quality") is None
        metrics = parse(client.get("/metrics").text)
        assert not [k for k in metrics if k[0].startswith("model_quality_")]


def test_a_version_without_a_reference_serves_as_before(
    world: dict[str, Path], tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    export_to_repository(repository, Settings(_env_file=None).model_cache_dir)
    app = create_app(make_settings(model_repository=repository), configure_logging=False)
    with TestClient(app) as client:
        ready_client(client)
        assert client.get(f"/models/{MODEL}").json()["versions"][0].get("reference") is None
        photo = image_files(world["live"])[0]
        answer = client.post(
            "/predict", params=ASK, files={"file": ("a.jpg", photo.read_bytes(), "image/jpeg")}
        )
        assert answer.status_code == 200 and answer.json().get("quality") is None
        assert not [
            k for k in parse(client.get("/metrics").text) if k[0].startswith("model_quality_")
        ]


def test_an_unusually_unsure_answer_keeps_its_trace_and_links_it(world: dict[str, Path]) -> None:
    """Below the reference's 5th percentile of confidence: the trace is kept although
    healthy traces are not sampled, and the confidence histogram's exemplar points at it."""
    reference = _reference(world)
    exporter = InMemorySpanExporter()
    settings = make_settings(model_repository=world["repository"], trace_sample_ratio=0.0)
    app = create_app(settings, span_exporter=exporter, configure_logging=False)
    with TestClient(app) as client:
        ready_client(client)
        # A flat grey frame (a lens cap, a dead feed): the model has nothing to go on.
        grey = jpeg(Image.new("RGB", (256, 256), (128, 128, 128)), 90)
        unsure = client.post(
            "/predict", params=ASK, files={"file": ("grey.jpg", grey, "image/jpeg")}
        ).json()
        assert unsure["predictions"][0]["confidence"] < reference.low_confidence
        sure_photo = image_files(world["live"])[0].read_bytes()
        typical = client.post(
            "/predict", params=ASK, files={"file": ("a.jpg", sure_photo, "image/jpeg")}
        ).json()
        metrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    assert unsure["quality"]["low_confidence"] is True
    kept = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert unsure["trace_id"] in kept
    if not typical["quality"]["low_confidence"]:
        assert typical["trace_id"] not in kept
    assert f'trace_id="{unsure["trace_id"]}"' in metrics
    exemplar_lines = [line for line in metrics.splitlines() if unsure["trace_id"] in line]
    assert any(line.startswith("prediction_confidence_bucket") for line in exemplar_lines)
    assert (
        total(parse(metrics.replace("# EOF\n", "")), "traces_kept_total", reason="low_confidence")
        >= 1
    )


def test_with_two_workers_the_counters_sum_exactly_to_the_images_answered(
    world: dict[str, Path],
) -> None:
    """Every signal of every image once, over both workers; a client's tensor adds only
    answer signals."""
    photos = image_files(world["live"])[:40]
    env = {"MODEL_REPOSITORY": str(world["repository"]), "WORKERS": "2"}
    with gateway_process(env) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as client:
        for photo in photos:
            answer = client.post(
                "/predict", files={"file": ("a.jpg", photo.read_bytes(), "image/jpeg")}
            )
            assert answer.status_code == 200
        tensor = random.Random(5).random
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 224, 224],
                    "datatype": "FP32",
                    "data": [tensor() - 0.5 for _ in range(3 * 224 * 224)],
                }
            ]
        }
        for _ in range(3):
            answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
            assert answer.status_code == 200, answer.text
        # An unusually unsure answer: its kept trace is the confidence histogram's
        # exemplar whichever worker answers the scrape.
        grey = jpeg(Image.new("RGB", (256, 256), (128, 128, 128)), 90)
        unsure = client.post(
            "/predict", params=ASK, files={"file": ("grey.jpg", grey, "image/jpeg")}
        ).json()
        assert unsure["quality"]["low_confidence"] is True

        def linked() -> bool:
            text = client.get("/metrics", headers={"Accept": OPENMETRICS}).text
            return any(
                line.startswith("prediction_confidence_bucket") and unsure["trace_id"] in line
                for line in text.splitlines()
            )

        wait_until(linked, timeout=10, what="the low-confidence exemplar")
        images = len(photos) + 1
        expected = {s: images + (3 if s in ANSWER_SIGNALS else 0) for s in SIGNALS}

        def counted() -> dict[str, float]:
            samples = parse(client.get("/metrics").text)
            return {
                s: total(samples, "model_quality_observations_total", signal=s) for s in SIGNALS
            }

        # Each worker measures its answers' signals in batches, within 1 s; a
        # count only grows, so equal is exact (each image is counted once: unit tests).
        wait_until(lambda: counted() == expected, timeout=10, what="every signal counted")
        samples = parse(client.get("/metrics").text)
    assert total(samples, "model_quality_reference_images") == REFERENCE_IMAGES
