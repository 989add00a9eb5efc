"""What every benchmark shares: the photo, the machine description, medians."""

from __future__ import annotations

import io
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
RAW = RESULTS / "raw"


def photo_jpeg(side: int = 512, quality: int = 90) -> bytes:
    """A real 512x512 photograph (scikit-image's astronaut) as a JPEG."""
    import skimage.data

    with Image.open(Path(skimage.data.__file__).parent / "astronaut.png") as image:
        rgb = image.convert("RGB").resize((side, side))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def machine() -> str:
    """CPU model, core count and versions, for the head of every table."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return (
        f"{model}, {os.cpu_count()} vCPU, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )


T = TypeVar("T")


def median(values: list[float]) -> float:
    """Median of repeated runs (0 for none)."""
    return statistics.median(values) if values else 0.0


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` rotated by ``turn``: over the turns each comes first, none always runs
    first (after a pause) or last."""
    shift = turn % max(len(items), 1)
    return [*items[shift:], *items[:shift]]
