"""``inference-gateway quantize``: an INT8 version of a repository version, with its cost stated.

ONNX Runtime's static quantization (QDQ format, weights int8 per output channel,
activations uint8) after its recommended graph pre-processing (`quant_pre_process`).
The activations' ranges come from the user's calibration images, read with the
version's own preprocessing (`prepare_image`: what serving feeds the model). Each of
ONNX Runtime's calibration methods (MinMax, Entropy, Percentile) is tried, and the one
whose INT8 model agrees best with the source on held-out images is kept.

Agreement is judged on the hold-out images where the source is confident (top-1
confidence above `CONFIDENT`): on images where the source itself is unsure, its top-1
is close to a coin toss among neighbours and any change of rounding flips it, so the
overall agreement says more about the images than about the quantization (measured
with the built-in model on variants of scikit-image's photographs, docs/performance.md).
Both are reported, with the top-5 overlap and the mean KL divergence of the
confidences; the gate is the confident agreement, ties broken by the overall agreement
and then the smaller divergence. (With `quantize_static`'s own settings, 128 histogram
bins for 128 quantized bins, Entropy finds MinMax's ranges: measured identical here.)

Nothing is written unless the gate is met. The new version directory holds the INT8
``model.onnx`` and ``quantization.json``; it appears at once (staged beside it and
renamed), and a server watching the repository serves it like any other version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference_gateway.inference.backends import OnnxRuntimeBackend
from inference_gateway.inference.onnx_export import REPOSITORY_GRAPH
from inference_gateway.inference.postprocess import activate
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig
from inference_gateway.inference.profiler import read_prepared
from inference_gateway.inference.quality import file_sha256
from inference_gateway.inference.repository import (
    HF_CONFIG_FILE,
    HF_PREPROCESSOR_FILE,
    VersionSource,
)

#: The file beside an INT8 ``model.onnx`` that says how it was made and what it costs.
QUANTIZATION_FILE = "quantization.json"
#: A hold-out image counts for the gate when the source's top-1 confidence exceeds this.
CONFIDENT = 0.5
#: The default gate: top-1 agreement with the source on confident hold-out images.
#: Calibrations of the built-in model on real photographs reached 100% here (24 to 200
#: images); one on photographs darkened to near black 22%. 95% refuses such a one and
#: leaves room for a model that quantizes less well.
DEFAULT_MIN_AGREEMENT = 0.95
#: Fewest confident hold-out images the gate is judged on.
MIN_CONFIDENT = 20
#: Fewest calibration images: with two, ONNX Runtime wrote graphs it then refused to
#: load (duplicate node names); a few hundred like production's are best.
MIN_CALIBRATION = 10
#: Files a version directory may hold besides its graph that say how to feed it and
#: name its classes (Hugging Face's): copied into the INT8 version, which is fed alike.
VERSION_CONFIG_FILES = (HF_CONFIG_FILE, HF_PREPROCESSOR_FILE)
#: ONNX Runtime's calibration methods, in the order tried.
METHODS = ("MinMax", "Entropy", "Percentile")
#: Images run at once (calibration and evaluation).
BATCH = 8
#: A held-out image out of every this many calibration images, without ``--holdout``.
HOLDOUT_EVERY = 3

Images = npt.NDArray[np.float32]
Progress = Callable[[str], None]


class QuantizationError(ValueError):
    """Quantization cannot go on (bad input, or the result misses its gate); the message
    says why, and nothing was written."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """An INT8 model against its source on the hold-out images."""

    method: str
    top1_agreement: float  # every hold-out image
    confident_agreement: float  # those where the source's top-1 confidence > CONFIDENT
    top5_overlap: float  # mean share of the source's top 5 in the INT8 top 5
    mean_kl_divergence: float  # KL(source || INT8) of the confidences, mean over images


@dataclass(slots=True)
class QuantizationReport:
    """What `quantize` did: the content of ``quantization.json``."""

    source_version: str
    version: str
    method: str
    calibration_images: int
    holdout_images: int
    holdout_confident_images: int
    confident_threshold: float
    min_agreement: float
    top1_agreement: float
    confident_agreement: float
    top5_overlap: float
    mean_kl_divergence: float
    candidates: list[dict[str, Any]]
    speed: dict[str, Any]
    graph_preprocessed: bool
    format: str = "QDQ: weights int8 per channel, activations uint8"
    source_sha256: str = ""
    model_sha256: str = ""
    onnxruntime: str = ""
    created: str = ""
    skipped_files: list[str] = field(default_factory=list)


def is_quantized(source: VersionSource) -> bool:
    """Whether a version is one `quantize` wrote (its ``quantization.json``)."""
    return (source.path.parent / QUANTIZATION_FILE).exists()


def read_images(
    paths: Sequence[Path], preprocess: PreprocessConfig, limits: ImageLimits
) -> tuple[Images, list[str]]:
    """The images at ``paths`` as the version is fed them (``preprocess``: its loaded
    spec's, with its input type), stacked; and the files skipped (not images the
    gateway would accept), each with why."""
    tensors: list[Images] = []
    skipped: list[str] = []
    for path in paths:
        prepared = read_prepared(path, limits, preprocess)
        if isinstance(prepared, str):
            skipped.append(f"{path}: {prepared}")
        else:
            tensors.append(prepared.tensor)
    if not tensors:
        return np.zeros((0,), dtype=np.float32), skipped
    return np.stack(tensors), skipped


def split_holdout(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Calibration and hold-out files from one directory: every `HOLDOUT_EVERY`-th file
    (in a stable order) is held out."""
    holdout = [p for i, p in enumerate(paths) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    return [p for i, p in enumerate(paths) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1], holdout


def _batches(images: Images, size: int = BATCH) -> Iterator[Images]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


def _batch_size(source: VersionSource) -> int:
    """Images per pass for this version: one for a graph with a fixed batch of one
    (``max_batch_size: 1`` in its model.yaml), else `BATCH`."""
    return 1 if source.batching.max_batch_size == 1 else BATCH


def _confidences(
    model: Path, source: VersionSource, input_name: str, output_name: str, images: Images
) -> npt.NDArray[np.float64]:
    """The model's confidences for ``images`` (the version's activation), one row each."""
    backend = OnnxRuntimeBackend(model, threads=0)
    try:
        backend.select(input_name, output_name)
        rows = [
            activate(row, source.spec.activation)
            for batch in _batches(images, _batch_size(source))
            for row in backend.predict(batch)
        ]
    finally:
        backend.close()
    return np.asarray(rows, dtype=np.float64)


def agreement(
    method: str, reference: npt.NDArray[np.float64], candidate: npt.NDArray[np.float64]
) -> Agreement:
    """How far ``candidate``'s confidences follow ``reference``'s (same images, rows)."""
    top_ref, top_new = reference.argmax(axis=1), candidate.argmax(axis=1)
    same = top_ref == top_new
    confident = reference.max(axis=1) > CONFIDENT
    k = min(5, reference.shape[1])
    five_ref = np.argsort(-reference, axis=1)[:, :k]
    five_new = np.argsort(-candidate, axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(five_ref, five_new, strict=True)])
    p = _distribution(reference)
    q = _distribution(candidate)
    kl = np.sum(p * np.log(p / q), axis=1)
    return Agreement(
        method=method,
        top1_agreement=float(same.mean()),
        confident_agreement=float(same[confident].mean()) if confident.any() else 0.0,
        top5_overlap=float(overlap),
        mean_kl_divergence=float(kl.mean()),
    )


def _distribution(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rows as probability distributions (sigmoid or raw scores normalised), never 0."""
    clipped = np.clip(rows, 1e-12, None)
    return np.asarray(clipped / clipped.sum(axis=1, keepdims=True), dtype=np.float64)


def _preprocess_graph(source: Path, target: Path) -> bool:
    """ONNX Runtime's recommended pre-processing before quantization (graph
    optimisation, shape inference); False, the graph used as it is, when it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
    except Exception:  # shape inference fails on some graphs: go on without it
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        except Exception:  # the optimisation too: quantize the graph as it is
            shutil.copy(source, target)
            return False
    return True


def _quantize(graph: Path, target: Path, method: str, input_name: str, images: Images) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """The calibration images in batches, as the calibrator asks for them."""

        def __init__(self) -> None:
            # One image at a time: the histogram calibrators (Entropy, Percentile) stack
            # what each call gives, so every call must have the same shape.
            self._batches = iter(np.split(images, len(images)))

        def get_next(self) -> dict[str, Images] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with contextlib.redirect_stdout(sys.stderr):  # its own progress lines: not the output
        quantize_static(
            str(graph),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
        )


def measure_speed(
    models: dict[str, Path],
    input_name: str,
    output_name: str,
    images: Images,
    batch_size: int = 4,
    seconds: float = 0.5,
    rounds: int = 3,
) -> dict[str, float]:
    """Images per second of each model on this machine: one thread, batches of
    ``batch_size``, ``rounds`` turns of ``seconds`` each in alternation, the median turn."""
    batch = np.ascontiguousarray(np.resize(images, (batch_size, *images.shape[1:])))
    backends = {name: OnnxRuntimeBackend(path, threads=1) for name, path in models.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}
    try:
        for backend in backends.values():
            backend.select(input_name, output_name)
            backend.predict(batch)  # warm-up
        for _ in range(rounds):
            for name, backend in backends.items():
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    backend.predict(batch)
                    done += len(batch)
                rates[name].append(done / (time.perf_counter() - start))
    finally:
        for backend in backends.values():
            backend.close()
    return {name: float(np.median(values)) for name, values in rates.items()}


def quantize(
    source: VersionSource,
    input_name: str,
    output_name: str,
    calibration: Images,
    holdout: Images,
    version: str,
    min_agreement: float,
    progress: Progress,
    skipped: Sequence[str] = (),
) -> tuple[Path, QuantizationReport]:
    """Quantize ``source`` with each method, keep the one that agrees best, and write the
    version ``version`` beside it when its confident agreement reaches
    ``min_agreement``; raises `QuantizationError` (nothing written) otherwise."""
    import onnxruntime

    model_dir = source.path.parent.parent
    target = model_dir / version
    if target.exists():
        raise QuantizationError(f"{target} exists; choose another version with --to")
    io = (input_name, output_name)
    reference, confident = _judged_holdout(source, io, calibration, holdout, progress)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=model_dir) as tmp:
        work = Path(tmp)
        graph = work / "preprocessed.onnx"
        progress("pre-processing the graph (ONNX Runtime's quant_pre_process)")
        preprocessed = _preprocess_graph(source.path, graph)
        results, failures = _each_method(
            work, graph, source, io, calibration, holdout, (reference, confident), progress
        )
        best, chosen = max(
            results.values(),
            key=lambda r: (r[0].confident_agreement, r[0].top1_agreement, -r[0].mean_kl_divergence),
        )
        if best.confident_agreement < min_agreement:
            raise QuantizationError(
                f"the best calibration ({best.method}) agrees with version "
                f"{source.spec.version} on {best.confident_agreement:.1%} of the {confident} "
                f"confident hold-out images, below --min-agreement {min_agreement:.1%}; "
                "nothing was written (calibrate with more images like production's)"
            )
        progress("measuring the speed of both versions on this machine")
        batch_size = min(4, _batch_size(source))
        speed = measure_speed(
            {"source": source.path, "int8": chosen}, input_name, output_name, holdout, batch_size
        )
        report = QuantizationReport(
            source_version=source.spec.version,
            version=version,
            method=best.method,
            calibration_images=len(calibration),
            holdout_images=len(holdout),
            holdout_confident_images=confident,
            confident_threshold=CONFIDENT,
            min_agreement=min_agreement,
            top1_agreement=best.top1_agreement,
            confident_agreement=best.confident_agreement,
            top5_overlap=best.top5_overlap,
            mean_kl_divergence=best.mean_kl_divergence,
            candidates=[asdict(found) for found, _ in results.values()]
            + [{"method": method, "error": why} for method, why in failures.items()],
            speed={
                "source_images_per_second": round(speed["source"], 1),
                "int8_images_per_second": round(speed["int8"], 1),
                "ratio": round(speed["int8"] / speed["source"], 2),
                "threads": 1,
                "batch": batch_size,
            },
            graph_preprocessed=preprocessed,
            source_sha256=file_sha256(source.path),
            model_sha256=file_sha256(chosen),
            onnxruntime=onnxruntime.__version__,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            skipped_files=list(skipped),
        )
        _install(work / "version", chosen, source, report, target)
    return target, report


def _judged_holdout(
    source: VersionSource,
    io: tuple[str, str],
    calibration: Images,
    holdout: Images,
    progress: Progress,
) -> tuple[npt.NDArray[np.float64], int]:
    """The source's confidences on the hold-out images and how many are confident,
    once the image counts are checked."""
    if len(calibration) < MIN_CALIBRATION:
        raise QuantizationError(
            f"{len(calibration)} calibration images the model can read; at least "
            f"{MIN_CALIBRATION} are needed (a few hundred like production's are best)"
        )
    if len(holdout) == 0:
        raise QuantizationError("no hold-out images the model can read")
    progress(f"reading the source's answers on {len(holdout)} hold-out images")
    try:
        reference = _confidences(source.path, source, *io, holdout)
    except Exception as exc:  # ONNX Runtime's own errors
        raise QuantizationError(
            f"ONNX Runtime cannot run version {source.spec.version} on the hold-out images: {exc}"
        ) from exc
    confident = int((reference.max(axis=1) > CONFIDENT).sum())
    if confident < MIN_CONFIDENT:
        raise QuantizationError(
            f"{confident} of the {len(holdout)} hold-out images have a top-1 confidence above "
            f"{CONFIDENT} with version {source.spec.version}; at least {MIN_CONFIDENT} are "
            "needed to judge the INT8 model (add hold-out images the model recognises)"
        )
    return reference, confident


def _each_method(
    work: Path,
    graph: Path,
    source: VersionSource,
    io: tuple[str, str],
    calibration: Images,
    holdout: Images,
    judged: tuple[npt.NDArray[np.float64], int],
    progress: Progress,
) -> tuple[dict[str, tuple[Agreement, Path]], dict[str, str]]:
    """Each method's INT8 model and its agreement with the source's confidences on the
    hold-out (``judged``: those, and how many are confident), and the methods that
    failed (why); raises when every one failed."""
    reference, confident = judged
    results: dict[str, tuple[Agreement, Path]] = {}
    failures: dict[str, str] = {}
    for number, method in enumerate(METHODS, start=1):
        progress(
            f"calibrating with {method} ({number}/{len(METHODS)}) on {len(calibration)} images"
        )
        candidate = work / f"{method}.onnx"
        try:
            _quantize(graph, candidate, method, io[0], calibration)
            answers = _confidences(candidate, source, *io, holdout)
        except Exception as exc:  # ONNX Runtime's own errors: this method failed
            failures[method] = f"{type(exc).__name__}: {str(exc)[:300]}"
            progress(f"{method}: failed ({failures[method]})")
            continue
        found = agreement(method, reference, answers)
        progress(
            f"{method}: top-1 agreement {found.confident_agreement:.1%} on the {confident} "
            f"confident hold-out images, {found.top1_agreement:.1%} on all"
        )
        results[method] = (found, candidate)
    if not results:
        raise QuantizationError(
            "no calibration gave a model ONNX Runtime can run ("
            + "; ".join(f"{m}: {why}" for m, why in failures.items())
            + "); nothing was written (calibrate with images like production's)"
        )
    return results, failures


def _install(
    staged: Path, graph: Path, source: VersionSource, report: QuantizationReport, target: Path
) -> None:
    """Lay the version out in ``staged`` (the INT8 graph, the source version's own
    config files, ``quantization.json``) and rename it to ``target`` in one step."""
    staged.mkdir()
    os.replace(graph, staged / REPOSITORY_GRAPH)
    for name in VERSION_CONFIG_FILES:  # a version's own labels and preprocessing
        if (source.path.parent / name).is_file():
            shutil.copy(source.path.parent / name, staged / name)
    (staged / QUANTIZATION_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    for path in (staged, *staged.iterdir()):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    staged.rename(target)
