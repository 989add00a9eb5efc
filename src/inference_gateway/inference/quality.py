"""Is the model still right? A version's reference profile and the signals of each answer.

No label is needed: each answered image is described by what the model said (its
predicted class, top-1 confidence, the margin over the second class, the normalised
entropy of its confidences) and by what it was shown (mean luminance and luminance
contrast of the pixels the model sees, the uploaded image's pixel count, aspect ratio
and format). A *reference* — the same signals over a set of images that look like
production, written by ``inference-gateway profile`` beside the version's
``model.onnx`` — fixes a bounded set of buckets for each signal: the deciles of the
reference for continuous signals (each holds about a tenth of it), the reference's
most frequent classes plus ``other`` and ``unseen`` for the class, its formats plus
``other``. The server counts each answer into those buckets; Prometheus compares the
live shares with the reference's (the population stability index, `psi`) in recording
rules, and alerts.

Everything here is pure: building a reference from observations, bucketing one
observation, the PSI, and the JSON form of a reference (`Reference.to_json` /
`parse_reference`). Reading and hashing files happens at the edges (`load_reference`,
the ``profile`` command).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The file a version's reference lives in, beside its ``model.onnx``.
REFERENCE_FILE = "reference.json"
#: The reference file's format; a file of another format is refused with a reason.
FORMAT_VERSION = 1

#: Every signal, in the order the metrics and the rules list them. The last three
#: input signals are ours: the first five cannot see a greyscale camera, a blurred one
#: or heavy recompression (measured: PSI under 0.17 where these give 1.6 to 5.6).
SIGNALS: tuple[str, ...] = (
    "class", "confidence", "margin", "entropy",
    "luminance", "contrast", "pixels", "aspect_ratio", "format",
    "saturation", "sharpness", "jpeg_quality",
)  # fmt: skip
#: Signals of the answer: every answered image has them.
ANSWER_SIGNALS: tuple[str, ...] = SIGNALS[:4]
#: Signals of the image: only answers to an image (not to a client's tensor) have them.
INPUT_SIGNALS: tuple[str, ...] = SIGNALS[4:]
#: Signals bucketed by the reference's deciles.
CONTINUOUS: tuple[str, ...] = tuple(s for s in SIGNALS if s not in ("class", "format"))

#: Most classes with a bucket of their own; the rest of the reference's classes are
#: ``other``, classes it never predicted ``unseen`` (32 class buckets at most). The
#: reference's share of ``unseen`` is the Good-Turing estimate of meeting a class it
#: never saw: the share of its images whose class it saw only once.
MAX_CLASSES = 30
#: Most formats with a bucket of their own (then ``other``).
MAX_FORMATS = 8
OTHER = "other"
UNSEEN = "unseen"
#: Continuous signals fall into the reference's deciles: 10 buckets (11 when the
#: reference's largest value is a decile itself, so values above it have their own).
DECILES = 10
#: The pseudo-count added to every bucket, live and reference alike, before shares are
#: compared: an empty bucket gives a finite PSI. The recording rules use the same.
SMOOTHING = 0.5
#: The reference's percentiles of each continuous signal kept for `Reference.rank`.
PERCENTILES = 101
#: The PSI from which a shift counts as drift (the usual rule of thumb: < 0.1 stable,
#: 0.1-0.25 moderate, >= 0.25 a shift).
DRIFT_PSI = 0.25


@dataclass(frozen=True, slots=True)
class ImageSignals:
    """What the gateway measured of one image while preparing it for the model."""

    luminance: float  # mean luma (ITU-R 601, 0..255) of the pixels the model sees
    contrast: float  # their standard deviation
    pixels: int  # width x height of the uploaded image
    aspect_ratio: float  # width / height of the uploaded image
    format: str  # its encoded format, lower case ("jpeg", "png", ...)
    saturation: float  # mean chroma (max - min of R, G, B) of the model's pixels, 0..255
    sharpness: float  # mean absolute difference of horizontally adjacent luma, 0..255
    # (luminance, contrast, saturation and sharpness of a sample of the model's crop)
    jpeg_quality: float  # JPEG quality (1-100) from its tables; 100 for other formats


@dataclass(frozen=True, slots=True)
class Observation:
    """One answered image's signals (no image signals for a client's tensor)."""

    label: str
    confidence: float
    margin: float
    entropy: float
    image: ImageSignals | None = None

    def value(self, signal: str) -> float | str | None:
        """The value of one signal (None: an image signal of a tensor answer)."""
        if signal == "class":
            return self.label
        if signal in ANSWER_SIGNALS:
            return float(getattr(self, signal))
        return None if self.image is None else getattr(self.image, signal)


@dataclass(frozen=True, slots=True)
class ImageProbe:
    """What serving keeps of an image until its input signals are measured: a sample
    of the crop the model sees (RGB, uint8, every `SIGNAL_STRIDE`-th pixel across and
    down: a view, no copy) and what the header and decoder said."""

    sample: npt.NDArray[np.uint8]
    pixels: int
    aspect_ratio: float
    format: str
    jpeg_quality: float


#: The input signals are read on every this-many-th pixel of the crop, across and
#: down (224 x 224: 56 x 56 samples).
SIGNAL_STRIDE = 4
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601


def measure(probes: Sequence[ImageProbe]) -> list[ImageSignals]:
    """The input signals of many images, together: luminance and contrast (mean and
    standard deviation of luma, ITU-R 601), saturation (mean chroma: max minus min of
    R, G, B, 0 for greyscale) and sharpness (mean absolute difference of horizontally
    adjacent luma: blur lowers it), each 0..255, on each image's sample.

    One numpy pass over the stacked samples of images of one size: each of the twenty
    array calls costs about the same for one image as for sixty, and on a busy server
    these calls, each run once per image, cost 0.26 ms of CPU an image (2% of one).
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, probe in enumerate(probes):
        by_shape.setdefault(probe.sample.shape, []).append(i)
    measured: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * len(probes)
    for (height, width, _), indices in by_shape.items():
        if not height or not width:
            continue
        stacked = np.stack([probes[i].sample for i in indices])  # (n, h, w, 3) uint8
        red, green, blue = stacked[..., 0], stacked[..., 1], stacked[..., 2]
        # Element-wise (numpy hands `@` on float32 to BLAS, whose threads then spin).
        luma = red * np.float32(_LUMA[0])
        luma += green * np.float32(_LUMA[1])
        luma += blue * np.float32(_LUMA[2])
        mean = luma.mean(axis=(1, 2), dtype=np.float64)
        square = np.square(luma).mean(axis=(1, 2), dtype=np.float64)
        chroma = np.maximum(np.maximum(red, green), blue)
        chroma -= np.minimum(np.minimum(red, green), blue)
        saturation = chroma.mean(axis=(1, 2), dtype=np.float64)
        if width > 1:
            sharpness = np.abs(np.diff(luma, axis=2)).mean(axis=(1, 2), dtype=np.float64)
        else:
            sharpness = np.zeros(len(indices))
        for row, i in enumerate(indices):
            average = float(mean[row])
            spread = math.sqrt(max(float(square[row]) - average * average, 0.0))
            measured[i] = (average, spread, float(saturation[row]), float(sharpness[row]))
    return [
        ImageSignals(
            luminance=luminance,
            contrast=contrast,
            pixels=probe.pixels,
            aspect_ratio=probe.aspect_ratio,
            format=probe.format,
            saturation=saturation_,
            sharpness=sharpness_,
            jpeg_quality=probe.jpeg_quality,
        )
        for probe, (luminance, contrast, saturation_, sharpness_) in zip(
            probes, measured, strict=True
        )
    ]


#: The luminance quantisation table of the JPEG standard (Annex K), natural order:
#: libjpeg scales it by the quality setting.
_JPEG_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


_JPEG_LUMA_SUM = sum(_JPEG_LUMA_TABLE)


def jpeg_quality(tables: Mapping[int, Sequence[int]] | None) -> float:
    """The quality a JPEG was saved at, from its luminance quantisation table (libjpeg's
    scaling inverted: exact for libjpeg's own tables, an equivalent for others); 100
    without tables (a format that does not quantise this way)."""
    table = None if not tables else tables.get(0)
    if not table or len(table) != len(_JPEG_LUMA_TABLE):
        return 100.0
    # Each entry is the standard's x scale / 100, rounded, and clamped to 1..255: the
    # sums give the scale; at low qualities (entries at 255) the median over the
    # unclamped entries does.
    if max(table) < 255:
        scale = 100.0 * sum(table) / _JPEG_LUMA_SUM
    else:
        ratios = sorted(
            100.0 * t / r for t, r in zip(table, _JPEG_LUMA_TABLE, strict=True) if 1 < t < 255
        )
        scale = ratios[len(ratios) // 2] if ratios else 100.0 * sum(table) / _JPEG_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return min(max(quality, 1.0), 100.0)


_TINY = float(np.finfo(np.float64).tiny)


def observe(
    confidences: npt.NDArray[np.float64], labels: Sequence[str], image: ImageSignals | None
) -> Observation:
    """One answer's signals from its confidences (`observe_many` of one)."""
    return observe_many([confidences], [labels], [image])[0]


def observe_many(
    confidences: Sequence[npt.NDArray[np.float64]],
    labels: Sequence[Sequence[str]],
    images: Sequence[ImageSignals | None],
) -> list[Observation]:
    """Answers' signals from their confidences, in one numpy pass per number of
    classes: top-1 class and confidence, margin (top-1 minus top-2) and entropy (of the
    confidences scaled to sum to 1, any activation, divided by ln(classes))."""
    by_size: dict[int, list[int]] = {}
    for i, answer in enumerate(confidences):
        by_size.setdefault(answer.size, []).append(i)
    measured: list[tuple[int, float, float, float]] = [(0, 0.0, 0.0, 0.0)] * len(confidences)
    for size, indices in by_size.items():
        stacked = np.stack([confidences[i] for i in indices]).astype(np.float64, copy=False)
        best = np.argmax(stacked, axis=1)
        top1 = stacked[np.arange(len(indices)), best]
        second = np.zeros(len(indices))
        entropy = np.zeros(len(indices))
        if size > 1:
            second = np.partition(stacked, -2, axis=1)[:, -2]
            total = stacked.sum(axis=1)
            # H of p = c / T is ln T - (1/T) sum c ln c: no normalised copy; a zero
            # confidence adds 0 (c ln c -> 0), floored to the smallest float's log.
            # Element-wise: numpy hands `@` to BLAS, whose threads then spin.
            weighted = (stacked * np.log(np.maximum(stacked, _TINY))).sum(axis=1)
            usable = (total > 0) & np.isfinite(total)
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = (np.log(total) - weighted / total) / math.log(size)
            entropy = np.where(usable, np.nan_to_num(raw), 0.0)
        for row, i in enumerate(indices):
            measured[i] = (
                int(best[row]),
                float(top1[row]),
                float(top1[row] - second[row]),
                min(max(float(entropy[row]), 0.0), 1.0),
            )
    return [
        Observation(
            label=names[best], confidence=top1, margin=margin, entropy=entropy_, image=image
        )
        for names, image, (best, top1, margin, entropy_) in zip(
            labels, images, measured, strict=True
        )
    ]


def decile_edges(values: Sequence[float]) -> tuple[float, ...]:
    """The ascending bucket edges of a continuous signal from the reference's values.

    Bucket ``i`` holds ``[edge[i-1], edge[i])``. The inner deciles, without repeats (a
    value many images share is one edge); when the largest value is an edge itself,
    the next float above it is added, so values above everything the reference saw
    get a bucket of their own instead of joining the reference's largest.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    quantiles = np.quantile(ordered, np.arange(1, DECILES) / DECILES)
    edges = sorted({float(q) for q in quantiles})
    top = float(ordered[-1])
    if edges[-1] >= top:
        edges.append(float(np.nextafter(top, math.inf)))
    return tuple(edges)


#: The largest reference file read (a real one is tens of kilobytes).
MAX_REFERENCE_BYTES = 4 << 20


class _ReferenceFile(BaseModel):
    """The JSON form of a reference, checked when it is read: every number finite,
    every list bounded (the file decides how many series the server exports)."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    format_version: Literal[1]
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_name: str = Field("", max_length=256)
    model_version: str = Field("", max_length=64)
    created: str = Field("", max_length=64)
    images: int = Field(ge=1, le=1_000_000_000)
    classes: list[str] = Field(max_length=MAX_CLASSES)
    seen_classes: list[str] = Field(max_length=100_000)
    formats: list[Annotated[str, Field(pattern=r"^[a-z0-9]{1,16}$")]] = Field(
        max_length=MAX_FORMATS
    )
    edges: dict[str, Annotated[list[float], Field(min_length=1, max_length=DECILES)]]
    fractions: dict[str, dict[str, Annotated[float, Field(ge=0, le=1)]]]
    percentiles: dict[str, Annotated[list[float], Field(min_length=2, max_length=1001)]]
    confidence_mean: float
    confidence_stddev: float = Field(ge=0)
    low_confidence: float
    smoothing: float = SMOOTHING


@dataclass(frozen=True)
class Reference:
    """One version's reference profile: its buckets and the reference's share of each.

    ``sha256`` is that of the reference file itself (what `model_quality_reference_info`
    shows), ``model_sha256`` that of the model file it was written for.
    """

    model_sha256: str
    images: int
    classes: tuple[str, ...]
    seen_classes: frozenset[str]
    formats: tuple[str, ...]
    edges: Mapping[str, tuple[float, ...]]
    fractions: Mapping[str, Mapping[str, float]]
    percentiles: Mapping[str, tuple[float, ...]]
    confidence_mean: float
    confidence_stddev: float
    #: The reference's 5th percentile of top-1 confidence: answers below it are unusual
    #: enough that their traces are kept (reason ``low_confidence``).
    low_confidence: float
    model_name: str = ""
    model_version: str = ""
    created: str = ""
    sha256: str = ""

    # --- buckets ----------------------------------------------------------------------
    def buckets(self, signal: str) -> tuple[str, ...]:
        """Every bucket of ``signal``, in order (the series the server creates at 0)."""
        if signal == "class":
            return (*self.classes, OTHER, UNSEEN)
        if signal == "format":
            return (*self.formats, OTHER)
        return tuple(str(i) for i in range(len(self.edges[signal]) + 1))

    def bucket(self, signal: str, value: float | str) -> str:
        """The bucket one value of ``signal`` falls into."""
        if signal == "class":
            label = str(value)
            if label in self.classes:  # at most 30
                return label
            return OTHER if label in self.seen_classes else UNSEEN
        if signal == "format":
            return str(value) if value in self.formats else OTHER
        return str(bisect.bisect_right(self.edges[signal], float(value)))

    def buckets_of(self, observation: Observation) -> list[tuple[str, str]]:
        """(signal, bucket) of each signal the observation has."""
        pairs = []
        for signal in SIGNALS:
            value = observation.value(signal)
            if value is not None:
                pairs.append((signal, self.bucket(signal, value)))
        return pairs

    def rank(self, signal: str, value: float) -> float:
        """The share of the reference (0..1) below ``value`` of a continuous signal,
        from its percentiles: 0.96 for luminance is "darker than 96% of the reference"
        read the other way round (brighter than 96%)."""
        points = self.percentiles[signal]
        if value <= points[0]:
            return 0.0
        if value >= points[-1]:
            return 1.0
        i = bisect.bisect_right(points, value)
        low, high = points[i - 1], points[i]
        within = (value - low) / (high - low) if high > low else 0.0
        return (i - 1 + within) / (len(points) - 1)

    # --- the file -----------------------------------------------------------------------
    def to_json(self) -> str:
        """The reference file's text."""
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "created": self.created,
            "images": self.images,
            "classes": list(self.classes),
            "seen_classes": sorted(self.seen_classes),
            "formats": list(self.formats),
            "edges": {s: list(e) for s, e in self.edges.items()},
            "fractions": {s: dict(f) for s, f in self.fractions.items()},
            "percentiles": {s: list(p) for s, p in self.percentiles.items()},
            "confidence_mean": self.confidence_mean,
            "confidence_stddev": self.confidence_stddev,
            "low_confidence": self.low_confidence,
            "smoothing": SMOOTHING,
        }
        return json.dumps(data, indent=1) + "\n"


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message says why (never the model's
    fault: the version serves, its quality signals are off)."""


def parse_reference(text: str | bytes, model_sha256: str) -> Reference:
    """A reference from its file's text, checked against the model file's SHA-256."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        data = _ReferenceFile.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise ReferenceError(
            f"{REFERENCE_FILE} is not a reference: {where}: {first['msg']}"
        ) from None
    if data.model_sha256 != model_sha256:
        raise ReferenceError(
            f"{REFERENCE_FILE} was written for another model file (sha256 "
            f"{data.model_sha256[:12]}…, this one is {model_sha256[:12]}…): run "
            "`inference-gateway profile` again for this version"
        )
    missing = [s for s in CONTINUOUS if s not in data.edges or s not in data.percentiles]
    missing += sorted(set(SIGNALS) - set(data.fractions) - set(missing))
    if missing:
        raise ReferenceError(f"{REFERENCE_FILE} lacks signals: {', '.join(missing)}")
    _check_lists(data)
    reference = Reference(
        model_sha256=data.model_sha256,
        images=data.images,
        classes=tuple(data.classes),
        seen_classes=frozenset(data.seen_classes),
        formats=tuple(data.formats),
        edges={s: tuple(data.edges[s]) for s in CONTINUOUS},
        fractions={s: dict(f) for s, f in data.fractions.items()},
        percentiles={s: tuple(data.percentiles[s]) for s in CONTINUOUS},
        confidence_mean=data.confidence_mean,
        confidence_stddev=data.confidence_stddev,
        low_confidence=data.low_confidence,
        model_name=data.model_name,
        model_version=data.model_version,
        created=data.created,
        sha256=hashlib.sha256(raw).hexdigest(),
    )
    for signal in SIGNALS:
        shares = data.fractions[signal]
        buckets = reference.buckets(signal)
        if set(shares) != set(buckets):
            odd = sorted(set(shares) ^ set(buckets))[:5]
            raise ReferenceError(
                f"{REFERENCE_FILE}: fractions.{signal} must hold exactly the signal's "
                f"buckets (these differ: {', '.join(odd)})"
            )
        if abs(sum(shares.values()) - 1) > 1e-6:
            raise ReferenceError(f"{REFERENCE_FILE}: fractions.{signal} must sum to 1")
    return reference


def _check_lists(data: _ReferenceFile) -> None:
    """What pydantic's field rules cannot say: orders, repeats, reserved names."""
    if data.smoothing != SMOOTHING:
        raise ReferenceError(
            f"{REFERENCE_FILE}: smoothing {data.smoothing} (the rules use {SMOOTHING})"
        )
    for signal in CONTINUOUS:
        edges, points = data.edges[signal], data.percentiles[signal]
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ReferenceError(f"{REFERENCE_FILE}: edges.{signal} must be increasing")
        if any(b < a for a, b in itertools.pairwise(points)):
            raise ReferenceError(f"{REFERENCE_FILE}: percentiles.{signal} must not decrease")
    for name, values in (("classes", data.classes), ("formats", data.formats)):
        if len(set(values)) != len(values) or {OTHER, UNSEEN} & set(values):
            raise ReferenceError(
                f"{REFERENCE_FILE}: {name} must be distinct and not `{OTHER}` or `{UNSEEN}`"
            )
    if not set(data.classes) <= set(data.seen_classes):
        raise ReferenceError(f"{REFERENCE_FILE}: every one of classes must be in seen_classes")


def build_reference(
    observations: Sequence[Observation],
    model_sha256: str,
    *,
    model_name: str = "",
    model_version: str = "",
    created: str = "",
) -> Reference:
    """The reference of a set of answered images (each must have its image signals)."""
    if not observations:
        raise ValueError("a reference needs at least one image")
    if any(o.image is None for o in observations):
        raise ValueError("a reference is built from images, not tensors")
    counted = Counter(o.label for o in observations)
    classes = tuple(
        label
        for label, _ in sorted(counted.items(), key=lambda item: (-item[1], item[0]))
        if label not in (OTHER, UNSEEN)
    )[:MAX_CLASSES]
    formats = Counter(str(o.value("format")) for o in observations)
    top_formats = tuple(
        f for f, _ in sorted(formats.items(), key=lambda item: (-item[1], item[0]))
    )[:MAX_FORMATS]
    values = {s: [float(o.value(s)) for o in observations] for s in CONTINUOUS}  # type: ignore[arg-type]
    confidences = np.asarray(values["confidence"])
    skeleton = Reference(
        model_sha256=model_sha256,
        images=len(observations),
        classes=classes,
        seen_classes=frozenset(counted),
        formats=top_formats,
        edges={s: decile_edges(v) for s, v in values.items()},
        fractions={},
        percentiles={
            s: tuple(float(q) for q in np.quantile(v, np.linspace(0, 1, PERCENTILES)))
            for s, v in values.items()
        },
        confidence_mean=float(confidences.mean()),
        confidence_stddev=float(confidences.std(ddof=1)) if confidences.size > 1 else 0.0,
        low_confidence=float(np.quantile(confidences, 0.05)),
        model_name=model_name,
        model_version=model_version,
        created=created,
    )
    tallies: dict[str, Counter[str]] = {s: Counter() for s in SIGNALS}
    for observation in observations:
        for signal, bucket in skeleton.buckets_of(observation):
            tallies[signal][bucket] += 1
    n = len(observations)
    fractions = {s: {b: tallies[s][b] / n for b in skeleton.buckets(s)} for s in SIGNALS}
    # A long tail of classes means new images bring classes the reference never saw:
    # its expected share of `unseen` is not 0 but (Good-Turing) the share of images
    # whose class it saw once. The seen buckets give up that much, proportionally.
    once = sum(1 for count in counted.values() if count == 1) / n
    fractions["class"] = {b: f * (1 - once) for b, f in fractions["class"].items()}
    fractions["class"][UNSEEN] = once
    reference = dataclasses.replace(skeleton, fractions=fractions)
    return parse_reference(reference.to_json(), model_sha256)  # the file's own sha256


def psi(
    live: Mapping[str, float],
    reference_fractions: Mapping[str, float],
    reference_images: int,
    smoothing: float = SMOOTHING,
) -> float:
    """The population stability index of live bucket counts against the reference.

    Both sides are smoothed alike: each bucket's share is (count + smoothing) /
    (total + smoothing x buckets), the reference's counts being its fractions times its
    image count. Sum over buckets of (live - ref) x ln(live / ref): 0 for identical
    shares, finite for empty buckets. The recording rules compute exactly this.
    """
    buckets = list(reference_fractions)
    n = sum(live.get(b, 0.0) for b in buckets)
    width = smoothing * len(buckets)
    total = 0.0
    for b in buckets:
        p = (live.get(b, 0.0) + smoothing) / (n + width)
        q = (reference_fractions[b] * reference_images + smoothing) / (reference_images + width)
        total += (p - q) * math.log(p / q)
    return total


def psi_noise(buckets: int, live_images: float, reference_images: int) -> float:
    """The PSI that sampling noise alone reaches with few images, no drift at all.

    Without drift, PSI x nm/(n+m) is about chi-squared with B-1 degrees of freedom, so
    the PSI's mean is (B-1)(1/n + 1/m) and its standard deviation sqrt(2(B-1)) times
    (1/n + 1/m). This is the mean plus four standard deviations: a PSI above the drift
    threshold means something only while this stays below it, which is what decides
    the fewest images an alert needs (the rules use the same expression).
    """
    if live_images <= 0 or reference_images <= 0:
        return math.inf
    dof = max(buckets - 1, 1)
    return (dof + 4 * math.sqrt(2 * dof)) * (1 / live_images + 1 / reference_images)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_reference(version_dir: Path, model_file: Path) -> Reference | None:
    """The reference beside ``model_file`` checked against it, or None when there is none.

    Raises `ReferenceError` when the file exists but cannot be used.
    """
    path = version_dir / REFERENCE_FILE
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_REFERENCE_BYTES + 1)
        if len(text) > MAX_REFERENCE_BYTES:
            raise ReferenceError(f"{REFERENCE_FILE} is larger than {MAX_REFERENCE_BYTES} bytes")
        model_sha256 = file_sha256(model_file)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReferenceError(f"{REFERENCE_FILE} cannot be read: {exc.strerror}") from None
    return parse_reference(text, model_sha256)
