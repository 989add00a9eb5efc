"""Model-quality signals and references (inference/quality.py): what each computes."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFilter

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from inference_gateway.inference.quality import (
    CONTINUOUS,
    OTHER,
    SIGNALS,
    SMOOTHING,
    UNSEEN,
    ImageProbe,
    ImageSignals,
    Observation,
    ReferenceError,
    build_reference,
    decile_edges,
    jpeg_quality,
    measure,
    observe,
    parse_reference,
    psi,
    psi_noise,
)
from tests.images import CAT_PNG

SHA = "a" * 64


def _observation(rng: random.Random, label: str | None = None) -> Observation:
    return Observation(
        label=label or rng.choice(["tabby", "tiger cat", "espresso", "jellyfish"]),
        confidence=rng.random(),
        margin=rng.random() / 2,
        entropy=rng.random(),
        image=ImageSignals(
            luminance=rng.uniform(20, 230),
            contrast=rng.uniform(10, 90),
            pixels=rng.choice([640 * 480, 1024 * 768, 300 * 451]),
            aspect_ratio=rng.uniform(0.5, 2),
            format=rng.choice(["jpeg", "jpeg", "png"]),
            saturation=rng.uniform(0, 120),
            sharpness=rng.uniform(1, 30),
            jpeg_quality=rng.uniform(60, 100),
        ),
    )


def _reference(n: int = 400, seed: int = 1):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return build_reference([_observation(rng) for _ in range(n)], SHA)


# --- signals of one answer ----------------------------------------------------------------
def test_observe_reads_confidence_margin_and_normalised_entropy() -> None:
    labels = ["a", "b", "c", "d"]
    sure = observe(np.array([0.0, 1.0, 0.0, 0.0]), labels, None)
    assert (sure.label, sure.confidence, sure.margin, sure.entropy) == ("b", 1.0, 1.0, 0.0)
    unsure = observe(np.full(4, 0.25), labels, None)
    assert unsure.margin == 0.0
    assert unsure.entropy == pytest.approx(1.0)
    mixed = observe(np.array([0.5, 0.3, 0.1, 0.1]), labels, None)
    expected = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 2 * 0.1 * math.log(0.1)) / math.log(4)
    assert mixed.margin == pytest.approx(0.2)
    assert mixed.entropy == pytest.approx(expected)


def test_a_tensor_answer_has_no_image_signals() -> None:
    observation = observe(np.array([0.9, 0.1]), ["a", "b"], None)
    assert [observation.value(s) for s in ("luminance", "format", "jpeg_quality")] == [None] * 3


def _probe(pixels: npt.NDArray[np.uint8]) -> ImageProbe:
    return ImageProbe(sample=pixels, pixels=0, aspect_ratio=1.0, format="png", jpeg_quality=100)


def test_luma_is_itu_601_and_its_statistics_are_mean_and_spread() -> None:
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 100  # pure red 100: luma 29.9
    pixels[1, :, 1] = 200  # the second row adds green 200: 29.9 + 117.4
    (signals,) = measure([_probe(pixels)])
    assert signals.luminance == pytest.approx((29.9 + 147.3) / 2)
    assert signals.contrast == pytest.approx((147.3 - 29.9) / 2)


def _jpeg_quality_of(quality: int) -> float:
    buffer = io.BytesIO()
    with Image.open(CAT_PNG) as image:
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return jpeg_quality(decoded.quantization)


@pytest.mark.parametrize("quality", [5, 10, 25, 50, 75, 90, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality: int) -> None:
    assert _jpeg_quality_of(quality) == pytest.approx(quality, abs=1.5)


def test_formats_without_tables_count_as_quality_100() -> None:
    assert jpeg_quality(None) == 100.0
    assert jpeg_quality({}) == 100.0


def test_saturation_is_zero_for_grey_and_high_for_colour() -> None:
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    red = np.zeros((64, 64, 3), dtype=np.uint8)
    red[..., 0] = 200
    mixed = red.copy()
    mixed[:32, :, 2] = 50  # half the image: max 200 - min 0 becomes 200 - 0 still
    mixed[:32, :, 1] = 80  # ... and now 200 - 50
    measured = measure([_probe(grey), _probe(red), _probe(mixed)])
    assert [m.saturation for m in measured] == pytest.approx([0.0, 200.0, (150 + 200) / 2])


def test_sharpness_is_the_mean_step_between_neighbours_and_blur_lowers_it() -> None:
    stripes = np.zeros((4, 6, 3), dtype=np.uint8)
    stripes[:, ::2] = 90  # 90, 0, 90, 0, ...: every step is 90
    (striped,) = measure([_probe(stripes)])
    assert striped.sharpness == pytest.approx(90)
    assert measure([_probe(stripes[:, :1])])[0].sharpness == 0.0  # one column
    with Image.open(CAT_PNG) as image:
        rgb = image.convert("RGB")
    sharp, blurred = measure(
        [_probe(np.asarray(rgb)), _probe(np.asarray(rgb.filter(ImageFilter.GaussianBlur(4))))]
    )
    assert blurred.sharpness < 0.5 * sharp.sharpness


def test_images_of_different_sizes_are_measured_together_each_on_its_own() -> None:
    small, large = np.full((2, 2, 3), 10, dtype=np.uint8), np.full((8, 6, 3), 200, dtype=np.uint8)
    empty = np.zeros((0, 0, 3), dtype=np.uint8)
    measured = measure([_probe(small), _probe(large), _probe(empty), _probe(small)])
    assert [m.luminance for m in measured] == pytest.approx([10, 200, 0, 10], abs=1e-4)


def test_the_pipeline_sees_blur_on_its_sample_of_the_crop() -> None:
    """The signals are read on every 4th pixel of the crop: a blur of radius 4 still
    halves the sharpness."""
    with Image.open(CAT_PNG) as image:
        rgb = image.convert("RGB")
    measured = []
    for picture in (rgb, rgb.filter(ImageFilter.GaussianBlur(4))):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        probe = prepare_image(buffer.getvalue(), ImageLimits(), PreprocessConfig()).info.probe
        assert probe is not None
        measured.append(measure([probe])[0].sharpness)
    assert measured[1] < 0.5 * measured[0]


def test_the_pipeline_measures_the_crop_the_model_sees() -> None:
    """Luminance is of the model's pixels: a darkened upload is darker by the factor."""
    with Image.open(CAT_PNG) as image:
        rgb = image.convert("RGB")
    dark = Image.eval(rgb, lambda v: int(v * 0.4))
    infos = []
    for picture in (rgb, dark):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        infos.append(prepare_image(buffer.getvalue(), ImageLimits(), PreprocessConfig()).info)
    assert infos[0].probe is not None and infos[1].probe is not None
    bright, darkened = measure([infos[0].probe, infos[1].probe])
    assert darkened.luminance == pytest.approx(0.4 * bright.luminance, rel=0.03)
    assert (bright.format, bright.jpeg_quality) == ("png", 100.0)
    assert bright.saturation > 0 and bright.sharpness > 0


# --- buckets ------------------------------------------------------------------------------
def test_deciles_split_distinct_values_into_tenths() -> None:
    values = [float(v) for v in range(1000)]
    edges = decile_edges(values)
    assert len(edges) == 9
    reference = _reference()
    assert len(reference.buckets("luminance")) == 10
    for signal in CONTINUOUS:
        shares = reference.fractions[signal]
        assert sum(shares.values()) == pytest.approx(1.0)


def test_a_value_every_reference_image_shares_gets_buckets_below_at_and_above() -> None:
    edges = decile_edges([640.0] * 50)
    assert edges == (640.0, float(np.nextafter(640.0, math.inf)))
    # below, exactly the reference's value, above it: three buckets
    from bisect import bisect_right

    assert [bisect_right(edges, v) for v in (320.0, 640.0, 1280.0)] == [0, 1, 2]


def test_class_buckets_are_the_most_frequent_classes_then_other_and_unseen() -> None:
    rng = random.Random(3)
    observations = [_observation(rng, f"class {i % 40}") for i in range(400)]
    observations += [_observation(rng, "class 0") for _ in range(40)]
    reference = build_reference(observations, SHA)
    buckets = reference.buckets("class")
    assert len(buckets) == 32
    assert buckets[0] == "class 0"
    assert buckets[-2:] == (OTHER, UNSEEN)
    assert reference.bucket("class", "class 0") == "class 0"
    last = next(f"class {i}" for i in range(40) if f"class {i}" not in buckets)
    assert reference.bucket("class", last) == OTHER
    assert reference.bucket("class", "never predicted") == UNSEEN
    # Good-Turing: no class seen once, so no share for classes never seen
    assert reference.fractions["class"][UNSEEN] == 0.0
    assert sum(reference.fractions["class"].values()) == pytest.approx(1.0)


def test_the_share_of_unseen_classes_is_the_good_turing_estimate() -> None:
    """Classes the reference saw once say how often a new image brings a new class."""
    rng = random.Random(4)
    observations = [_observation(rng, "common") for _ in range(90)]
    observations += [_observation(rng, f"rare {i}") for i in range(10)]
    reference = build_reference(observations, SHA)
    shares = reference.fractions["class"]
    assert shares[UNSEEN] == pytest.approx(0.10)
    assert shares["common"] == pytest.approx(0.90 * 0.90)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_an_observation_falls_into_one_bucket_per_signal_it_has() -> None:
    reference = _reference()
    rng = random.Random(9)
    with_image = reference.buckets_of(_observation(rng))
    assert [s for s, _ in with_image] == list(SIGNALS)
    tensor = Observation("tabby", 0.5, 0.2, 0.4, None)
    assert [s for s, _ in reference.buckets_of(tensor)] == [
        "class",
        "confidence",
        "margin",
        "entropy",
    ]
    assert reference.bucket("format", "webp") == OTHER


def test_rank_places_a_value_among_the_reference() -> None:
    reference = _reference(1000)
    low, high = reference.percentiles["luminance"][0], reference.percentiles["luminance"][-1]
    assert reference.rank("luminance", low - 1) == 0.0
    assert reference.rank("luminance", high + 1) == 1.0
    middle = reference.rank("luminance", float(np.median([low, high])))
    assert 0.4 < middle < 0.6


# --- PSI ----------------------------------------------------------------------------------
def test_psi_is_zero_for_the_reference_shares_and_grows_with_a_shift() -> None:
    fractions = {"0": 0.5, "1": 0.5}
    assert psi({"0": 200, "1": 200}, fractions, 400) == pytest.approx(0.0)
    assert psi({"0": 300, "1": 100}, fractions, 400) > psi({"0": 220, "1": 180}, fractions, 400)


def test_psi_by_hand_with_an_empty_bucket_is_finite() -> None:
    """Two buckets, reference 100 images half and half, 10 live images all in one."""
    value = psi({"0": 10, "1": 0}, {"0": 0.5, "1": 0.5}, 100)
    p = [(10 + SMOOTHING) / (10 + 2 * SMOOTHING), SMOOTHING / (10 + 2 * SMOOTHING)]
    q = [(50 + SMOOTHING) / (100 + 2 * SMOOTHING)] * 2
    expected = sum((a - b) * math.log(a / b) for a, b in zip(p, q, strict=True))
    assert value == pytest.approx(expected)
    assert math.isfinite(psi({"0": 0, "1": 0}, {"0": 0.0, "1": 1.0}, 100))


def test_the_noise_floor_shrinks_with_images_and_grows_with_buckets() -> None:
    assert psi_noise(10, 0, 400) == math.inf
    assert psi_noise(10, 1000, 400) < psi_noise(10, 100, 400)
    assert psi_noise(32, 400, 400) > psi_noise(10, 400, 400)
    # the mean of a no-drift PSI is (B-1)(1/n+1/m): 0.155 for 32 buckets at 400 and 400
    assert pytest.approx(0.155) == 31 * (1 / 400 + 1 / 400)


def test_psi_of_samples_from_the_reference_stays_near_its_noise_floor() -> None:
    reference = _reference(800, seed=1)
    rng = random.Random(2)
    live: dict[str, dict[str, float]] = {s: {} for s in SIGNALS}
    for _ in range(800):
        for signal, bucket in reference.buckets_of(_observation(rng)):
            live[signal][bucket] = live[signal].get(bucket, 0) + 1
    for signal in CONTINUOUS:
        assert psi(live[signal], reference.fractions[signal], 800) < 0.1, signal


# --- the file -----------------------------------------------------------------------------
def test_a_reference_survives_its_file() -> None:
    reference = _reference()
    again = parse_reference(reference.to_json(), SHA)
    assert again.fractions == reference.fractions
    assert again.edges == reference.edges
    assert again.sha256 == reference.sha256 and len(again.sha256) == 64


def test_a_reference_for_another_model_file_is_refused_with_the_reason() -> None:
    with pytest.raises(ReferenceError, match="written for another model file"):
        parse_reference(_reference().to_json(), "b" * 64)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("fractions"), "fractions"),
        (lambda d: d["edges"].pop("luminance"), "lacks signals: luminance"),
        (lambda d: d["edges"].__setitem__("contrast", [3.0, 2.0]), "must be increasing"),
        (lambda d: d.__setitem__("format_version", 9), "format_version"),
        (lambda d: d["fractions"]["class"].__setitem__("made up", 0.1), "made up"),
    ],
)
def test_a_broken_reference_is_refused_with_what_is_wrong(change, message) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_reference().to_json())
    change(data)
    with pytest.raises(ReferenceError, match=message):
        parse_reference(json.dumps(data), SHA)


def test_a_reference_needs_images() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        build_reference([], SHA)
    with pytest.raises(ValueError, match="images, not tensors"):
        build_reference([Observation("a", 0.5, 0.1, 0.3, None)], SHA)


# --- the series ---------------------------------------------------------------------------
def test_a_versions_quality_series_exist_from_load_and_leave_with_it() -> None:
    from prometheus_client import generate_latest

    from inference_gateway.observability.metrics import Metrics
    from tests.scrape import parse, total

    metrics = Metrics(app_name="t", app_version="0", environment="test")
    reference = _reference()
    model = ("m", "1")
    metrics.initialise_model(model)
    metrics.set_quality_reference(
        model, reference.fractions, sha256=reference.sha256, images=reference.images
    )
    samples = parse(generate_latest(metrics.registry).decode())
    buckets = sum(len(reference.buckets(s)) for s in SIGNALS)
    counters = [k for k in samples if k[0] == "model_quality_observations_total"]
    assert len(counters) == buckets and all(samples[k] == 0 for k in counters)
    metrics.record_quality(model, reference.buckets_of(_observation(random.Random(1))))
    samples = parse(generate_latest(metrics.registry).decode())
    assert total(samples, "model_quality_observations_total") == len(SIGNALS)
    assert total(samples, "model_quality_reference_info", reference_sha256=reference.sha256) == 1
    metrics.forget_model(model)
    samples = parse(generate_latest(metrics.registry).decode())
    assert not [k for k in samples if k[0].startswith("model_quality_")]


def test_the_aspect_ratio_is_the_one_the_model_sees_with_exif_orientation() -> None:
    """A portrait photo stored landscape with EXIF orientation 6 is portrait to the model."""
    with Image.open(CAT_PNG) as image:
        rgb = image.convert("RGB")  # 451 x 300
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", exif=exif.tobytes())
    info = prepare_image(buffer.getvalue(), ImageLimits(), PreprocessConfig()).info
    assert (info.width, info.height) == (451, 300)
    assert info.probe is not None
    assert info.probe.aspect_ratio == pytest.approx(300 / 451)


def test_signals_are_measured_only_when_asked() -> None:
    with Image.open(CAT_PNG) as image:
        data = io.BytesIO()
        image.convert("RGB").save(data, format="PNG")
    info = prepare_image(data.getvalue(), ImageLimits(), PreprocessConfig(), measure=False).info
    assert info.probe is None


def _hostile(change):  # type: ignore[no-untyped-def]
    data = json.loads(_reference().to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a file that would make the server export 200,001 series per signal
        (lambda d: d["edges"].__setitem__("luminance", list(range(200_000))), "edges.luminance"),
        (lambda d: d["fractions"]["format"].__setitem__("jpeg", -5), "greater than or equal"),
        (lambda d: d["fractions"]["class"].pop("unseen"), "exactly the signal's buckets"),
        (lambda d: d["fractions"]["luminance"].__setitem__("0", 0.9), "must sum to 1"),
        (lambda d: d.__setitem__("classes", ["tabby", "tabby"]), "distinct"),
        (lambda d: d.__setitem__("classes", ["other"]), "distinct and not `other`"),
        (lambda d: d.__setitem__("formats", ["x" * 100]), "formats"),
        (lambda d: d.__setitem__("smoothing", 1.0), "smoothing"),
        (lambda d: d["percentiles"].__setitem__("pixels", [3.0, 2.0]), "must not decrease"),
    ],
)
def test_a_hostile_reference_is_refused_before_it_makes_a_series(change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReferenceError, match=message):
        parse_reference(_hostile(change), SHA)


def test_infinite_numbers_are_refused() -> None:
    text = _reference().to_json().replace('"low_confidence": ', '"low_confidence": Infinity, "x": ')
    with pytest.raises(ReferenceError, match="low_confidence"):
        parse_reference(text, SHA)


def test_an_oversized_reference_file_is_not_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from inference_gateway.inference.quality import MAX_REFERENCE_BYTES, load_reference

    model = tmp_path / "model.onnx"
    model.write_bytes(b"graph")
    (tmp_path / "reference.json").write_bytes(b" " * (MAX_REFERENCE_BYTES + 1))
    with pytest.raises(ReferenceError, match="larger than"):
        load_reference(tmp_path, model)
    (tmp_path / "reference.json").unlink()
    assert load_reference(tmp_path, model) is None


def test_a_replaced_reference_retires_its_own_buckets_with_several_workers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """prometheus_client cannot remove a multiprocess series: a bucket only the old
    reference had says -1 (the rules leave it out) and the old hash's info says 0."""
    from prometheus_client import generate_latest

    from inference_gateway.observability.metrics import RETIRED_BUCKET, Metrics
    from tests.scrape import parse, value

    metrics = Metrics(
        app_name="t", app_version="0", environment="t", multiprocess_dir=str(tmp_path)
    )
    model = ("m", "1")
    metrics.set_quality_reference(
        model, {"class": {"dog": 0.6, OTHER: 0.4, UNSEEN: 0.0}}, sha256="a"
    )
    metrics.set_quality_reference(
        model, {"class": {"cat": 0.7, OTHER: 0.3, UNSEEN: 0.0}}, sha256="b"
    )
    samples = parse(generate_latest(metrics.registry).decode())
    fraction = "model_quality_reference_fraction"
    labels = {"model_name": "m", "model_version": "1", "signal": "class"}
    assert value(samples, fraction, **labels, bucket="dog") == RETIRED_BUCKET
    assert value(samples, fraction, **labels, bucket="cat") == 0.7
    assert value(samples, fraction, **labels, bucket=OTHER) == 0.3
    info = "model_quality_reference_info"
    assert value(samples, info, model_name="m", model_version="1", reference_sha256="a") == 0
    assert value(samples, info, model_name="m", model_version="1", reference_sha256="b") == 1
