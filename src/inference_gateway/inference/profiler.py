"""``inference-gateway profile``: a version's reference, from images that look like production.

Each image goes through exactly what serving does — the version's own preprocessing
(`prepare_image`), its ONNX graph, its activation, and the same signals
(`quality.observe`) — so the reference and the live counts are measured alike. The
reference is written beside the version's ``model.onnx`` (atomically: a server polling
the repository never reads half a file) with the model file's SHA-256; the server then
loads the version again with its quality signals on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference_gateway.errors import InvalidImageException
from inference_gateway.inference.model import LoadedModel
from inference_gateway.inference.postprocess import activate
from inference_gateway.inference.preprocess import (
    ImageInfo,
    ImageLimits,
    PreparedImage,
    PreprocessConfig,
    prepare_image,
)
from inference_gateway.inference.quality import (
    DRIFT_PSI,
    REFERENCE_FILE,
    SIGNALS,
    Observation,
    Reference,
    build_reference,
    file_sha256,
    measure,
    observe,
    psi_noise,
)

#: Fewest images a reference may hold: below, deciles are noise.
MIN_IMAGES = 20
#: Images run through the model at once.
BATCH = 8


@dataclass(slots=True)
class Profile:
    """What profiling a set of images gave: the reference and the files it skipped."""

    reference: Reference
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def image_files(directory: Path) -> list[Path]:
    """Every regular file under ``directory`` (hidden ones aside), in a stable order."""
    found = []
    for top, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / n for n in sorted(names) if not n.startswith(".")]
    return found


def read_prepared(
    path: Path, limits: ImageLimits, preprocess: PreprocessConfig
) -> PreparedImage | str:
    """The image file ``path`` prepared as serving prepares an upload, or why it is
    skipped: not an image the gateway would accept, or a file that cannot be read."""
    try:
        return prepare_image(path.read_bytes(), limits, preprocess)
    except InvalidImageException as exc:
        return exc.detail
    except OSError as exc:
        return exc.strerror or str(exc)


def profile(
    model: LoadedModel,
    paths: Sequence[Path],
    limits: ImageLimits,
    model_file: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Profile:
    """Run ``model`` over the images at ``paths`` and build its reference.

    Files that are not images the gateway would accept are skipped and listed (with
    the reason a client would get). Raises ``ValueError`` when fewer than `MIN_IMAGES`
    remain.
    """
    observations, skipped = observe_images(model, paths, limits, progress)
    if len(observations) < MIN_IMAGES:
        raise ValueError(
            f"{len(observations)} usable images; a reference needs at least {MIN_IMAGES} "
            "(a few hundred that look like production give alerts that can fire)"
        )
    reference = build_reference(
        observations,
        file_sha256(model_file),
        model_name=model.spec.name,
        model_version=model.spec.version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return Profile(reference, skipped)


def observe_images(
    model: LoadedModel,
    paths: Sequence[Path],
    limits: ImageLimits,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Observation], list[tuple[Path, str]]]:
    """Each readable image's signals as serving measures them, and the files skipped."""
    observations: list[Observation] = []
    skipped: list[tuple[Path, str]] = []
    pending: list[tuple[npt.NDArray[np.float32], ImageInfo]] = []

    def run_pending() -> None:
        if not pending:
            return
        logits = model.backend.predict(np.stack([tensor for tensor, _ in pending]))
        probes = [info.probe for _, info in pending]
        images = iter(measure([p for p in probes if p is not None]))
        for row, probe in zip(logits, probes, strict=True):
            confidences = activate(row, model.spec.activation)
            image = next(images) if probe is not None else None
            observations.append(observe(confidences, model.spec.labels, image))
        pending.clear()

    for done, path in enumerate(paths, start=1):
        prepared = read_prepared(path, limits, model.spec.preprocess)
        if isinstance(prepared, str):
            skipped.append((path, prepared))
        else:
            pending.append((prepared.tensor, prepared.info))
            if len(pending) == BATCH:
                run_pending()
        if progress is not None:
            progress(done, len(paths))
    run_pending()
    return observations, skipped


def write_reference(version_dir: Path, reference: Reference) -> Path:
    """Write ``reference.json`` into ``version_dir`` in one step (a temporary file
    renamed over it)."""
    target = version_dir / REFERENCE_FILE
    handle, name = tempfile.mkstemp(prefix=f".{REFERENCE_FILE}.", dir=version_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as partial:
            partial.write(reference.to_json())
        os.chmod(name, 0o644)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return target


def quiet_signals(reference: Reference) -> list[str]:
    """Signals whose drift alerts could never fire with a reference this small: even
    with unlimited live images, the PSI that noise alone reaches stays above the
    drift threshold (`quality.psi_noise` with n → ∞)."""
    return [
        signal
        for signal in SIGNALS
        if psi_noise(len(reference.buckets(signal)), float("inf"), reference.images) >= DRIFT_PSI
    ]
