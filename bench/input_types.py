"""What a model's input type costs per image: float32 against float16 and uint8 pixels.

The built-in model and the same graph made to take float16 images or uint8 NHWC pixels
it normalises itself (`tests/input_types.py`, graph surgery), each loaded as the
repository loads it. Per image, in process, CPU time: the preprocessing (decode,
resize, crop, and normalise or not) of scikit-image's photographs as 512×512 JPEGs, and
the forward pass (one thread, batches of 4); medians of ``--repeats`` runs, the
configurations taking turns within each.

    .venv/bin/python -m bench.input_types [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import machine
from inference_gateway.config import Settings
from inference_gateway.inference.catalog import load_version
from inference_gateway.inference.onnx_export import export_to_repository
from inference_gateway.inference.preprocess import ImageLimits, prepare_image
from inference_gateway.inference.repository import model_versions
from tests.images import SKIMAGE_DATA
from tests.input_types import FLOAT16_YAML, UINT8_YAML, with_input_type
from tests.photo_variants import PHOTOS

BUILTIN = "efficientnet-lite0"
MODELS = {"float32": BUILTIN, "float16": "lite0-fp16", "uint8": "lite0-uint8"}


def _photos() -> list[bytes]:
    out = []
    for name in PHOTOS:
        with Image.open(SKIMAGE_DATA / name) as image:
            buffer = io.BytesIO()
            image.convert("RGB").resize((512, 512)).save(buffer, format="JPEG", quality=90)
            out.append(buffer.getvalue())
    return out


def main() -> None:
    """Build the three models, time them, print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    photos = _photos()
    limits = ImageLimits()
    with tempfile.TemporaryDirectory(prefix="bench-input-types-") as tmp:
        root = Path(tmp) / "models"
        export_to_repository(root, Settings(_env_file=None).model_cache_dir)
        source = root / BUILTIN / "1" / "model.onnx"
        for kind, config in (("float16", FLOAT16_YAML), ("uint8", UINT8_YAML)):
            name = MODELS[kind]
            with_input_type(source, root / name / "1" / "model.onnx", kind)
            (root / name / "model.yaml").write_text(config, encoding="utf-8")
            shutil.copy(root / BUILTIN / "labels.txt", root / name / "labels.txt")
        models = {
            kind: load_version(model_versions(root, name).versions[0], threads=1)
            for kind, name in MODELS.items()
        }
        pre_ms: dict[str, list[float]] = {kind: [] for kind in models}
        pass_ms: dict[str, list[float]] = {kind: [] for kind in models}
        for _ in range(args.repeats):
            for kind, model in models.items():
                start = time.process_time()
                tensors = [prepare_image(p, limits, model.spec.preprocess).tensor for p in photos]
                pre_ms[kind].append((time.process_time() - start) / len(photos) * 1000)
                batch = np.stack(tensors[:4])
                model.backend.predict(batch)  # warm
                start = time.process_time()
                for _ in range(5):
                    model.backend.predict(batch)
                pass_ms[kind].append((time.process_time() - start) / (5 * len(batch)) * 1000)
        for model in models.values():
            model.backend.close()
    base_pre, base_pass = (
        statistics.median(pre_ms["float32"]),
        statistics.median(pass_ms["float32"]),
    )
    print(f"# A model's input type: CPU per image ({machine()})\n")
    print(f"`python -m bench.input_types --repeats {args.repeats}`; in process, medians.\n")
    print(
        "| input | preprocessing ms/image | forward pass ms/image (1 thread, batch 4) | both, against float32 |"
    )
    print("|---|---:|---:|---:|")
    for kind in models:
        pre, fwd = statistics.median(pre_ms[kind]), statistics.median(pass_ms[kind])
        print(
            f"| {kind} | {pre:.2f} | {fwd:.2f} | {(pre + fwd) / (base_pre + base_pass) - 1:+.1%} |"
        )


if __name__ == "__main__":
    main()
