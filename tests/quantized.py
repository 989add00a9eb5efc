"""A model repository with an FP32 version and the INT8 version `quantize` made of it."""

from __future__ import annotations

import re
from pathlib import Path

from inference_gateway.cli import main as cli_main
from inference_gateway.inference.onnx_export import export_to_repository
from tests.photo_variants import variants, write_set

MODEL = "efficientnet-lite0"
#: Calibration and hold-out images: variants of scikit-image's photographs (crops,
#: flips, rotations, colour jitter), different seeds for each set.
CALIBRATION_IMAGES = 24
HOLDOUT_IMAGES = 72


def image_sets(
    root: Path, calibration_images: int = CALIBRATION_IMAGES, holdout_images: int = HOLDOUT_IMAGES
) -> tuple[Path, Path]:
    """The calibration and hold-out directories under ``root``."""
    calibration, holdout = root / "calibration", root / "holdout"
    write_set(calibration, variants(calibration_images, seed=1), seed=11)
    write_set(holdout, variants(holdout_images, seed=2), seed=12)
    return calibration, holdout


def quantized_repository(
    root: Path,
    cache: Path,
    calibration_images: int = CALIBRATION_IMAGES,
    holdout_images: int = HOLDOUT_IMAGES,
) -> Path:
    """``root/models``: version 1 exported, version 2 quantized from it, both served."""
    repository = root / "models"
    export_to_repository(repository, cache)
    config = repository / MODEL / "model.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(r"(?m)^versions: .*$", "versions: {all: true}", text), "utf-8")
    calibration, holdout = image_sets(root, calibration_images, holdout_images)
    status = cli_main(
        ["quantize", MODEL, "--calibration", str(calibration), "--holdout", str(holdout),
         "--repository", str(repository)]
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"quantize exited {status}")
    return repository
