"""``inference-gateway quantize``: an INT8 version from real photographs, served, gated.

The built-in model and variants of scikit-image's photographs (crops, flips, small
rotations, colour jitter): 24 to calibrate, 72 others held out (`tests/quantized.py`).
Most such variants leave the model unsure, so agreement is judged where it is
confident (top-1 confidence above 0.5), as the command does.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance

from inference_gateway.app import create_app
from inference_gateway.cli import main as cli_main
from inference_gateway.inference.quantization import (
    CONFIDENT,
    DEFAULT_MIN_AGREEMENT,
    METHODS,
    QUANTIZATION_FILE,
)
from tests.helpers import make_settings, ready_client
from tests.images import CAT_CLASSES, cat_jpeg
from tests.oip import classes
from tests.quantized import CALIBRATION_IMAGES, HOLDOUT_IMAGES, MODEL, image_sets
from tests.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(quantized_repository: Path) -> Iterator[tuple[TestClient, int]]:
    """The repository served, with its gRPC port."""
    port = free_port()
    app = create_app(
        make_settings(model_repository=quantized_repository, grpc_port=port),
        configure_logging=False,
    )
    with TestClient(app) as client:
        yield ready_client(client), port


def _report(repository: Path, version: str = "2") -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        (repository / MODEL / version / QUANTIZATION_FILE).read_text()
    )
    return report


def test_quantize_writes_an_int8_version_that_agrees_with_its_source(
    quantized_repository: Path,
) -> None:
    version = quantized_repository / MODEL / "2"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", QUANTIZATION_FILE]
    report = _report(quantized_repository)
    assert report["source_version"] == "1" and report["version"] == "2"
    assert report["calibration_images"] == CALIBRATION_IMAGES
    assert report["holdout_images"] == HOLDOUT_IMAGES
    assert report["confident_threshold"] == CONFIDENT
    assert report["min_agreement"] == DEFAULT_MIN_AGREEMENT
    # The gate it reports, met; the figures that say what was given up.
    assert report["confident_agreement"] >= report["min_agreement"]
    assert 0 < report["top1_agreement"] <= 1
    assert 0 < report["top5_overlap"] <= 1
    assert report["mean_kl_divergence"] >= 0
    assert report["method"] in METHODS
    assert {c["method"] for c in report["candidates"]} == set(METHODS)
    speed = report["speed"]
    assert speed["int8_images_per_second"] > 0 and speed["source_images_per_second"] > 0
    # INT8 weights: about a quarter of the FP32 file.
    fp32 = (quantized_repository / MODEL / "1" / "model.onnx").stat().st_size
    assert (version / "model.onnx").stat().st_size < fp32 / 2


def test_the_int8_version_is_served_like_any_other(served: tuple[TestClient, int]) -> None:
    """A real photograph through /predict and the Open Inference Protocol (REST, and gRPC
    with tritonclient), on the INT8 version and on its source: the same cat."""
    import tritonclient.grpc as grpcclient

    client, port = served
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    for version in ("1", "2"):
        answer = client.post(
            f"/models/{MODEL}/versions/{version}/predict",
            files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["class_id"] in CAT_CLASSES
        body = {
            "inputs": [
                {
                    "name": "image", "shape": [1], "datatype": "BYTES",
                    "data": [{"b64": base64.b64encode(cat_jpeg()).decode()}],
                }
            ]
        }  # fmt: skip
        v2 = client.post(f"/v2/models/{MODEL}/versions/{version}/infer", json=body)
        assert v2.status_code == 200, v2.text
        image = grpcclient.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([cat_jpeg()], dtype=np.object_))
        top = grpcclient.InferRequestedOutput("logits", class_count=1)
        result = grpc.infer(MODEL, [image], model_version=version, outputs=[top])
        assert classes(result)[0][0][1] in CAT_CLASSES, version
    grpc.close()
    listing = client.get(f"/models/{MODEL}").json()
    assert {v["version"] for v in listing["versions"]} >= {"1", "2"}


def test_a_calibration_that_cannot_reach_the_gate_writes_nothing(
    quantized_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twelve photographs darkened to near black: the INT8 model's ranges are those of a
    dark world; it disagrees with the source, and nothing is written."""
    holdout = quantized_repository.parent / "holdout"  # the fixture's hold-out images
    dark = tmp_path / "dark"
    dark.mkdir()
    for index, path in enumerate(sorted(holdout.iterdir())[:12]):
        with Image.open(path) as image:
            ImageEnhance.Brightness(image.convert("RGB")).enhance(0.02).save(dark / f"{index}.png")
    before = sorted(p.name for p in (quantized_repository / MODEL).iterdir())
    status = cli_main(
        ["quantize", MODEL, "--calibration", str(dark), "--holdout", str(holdout),
         "--repository", str(quantized_repository), "--to", "9"]
    )  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err
    assert "below --min-agreement 95.0%" in err and "nothing was written" in err
    assert sorted(p.name for p in (quantized_repository / MODEL).iterdir()) == before


def test_bad_calibration_input_is_a_clear_error(
    quantized_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    blank = tmp_path / "blank"
    blank.mkdir()
    for shade in (0, 255):
        Image.new("RGB", (320, 240), (shade,) * 3).save(blank / f"{shade}.png")
    photos, _ = image_sets(tmp_path / "sets", 12, 0)
    cases = [
        (["--calibration", str(tmp_path / "missing")], 2, "is not a directory"),
        (["--calibration", str(empty)], 2, "holds no files"),
        (["--calibration", str(blank)], 1, "at least 10 are needed"),
        (["--calibration", str(photos), "--holdout", str(blank)], 1, "at least 20 are needed"),
        (["--calibration", str(photos), "--holdout", str(empty)], 1, "no hold-out images"),
        (["--calibration", str(blank), "--version", "2"], 2, "already INT8"),
        (["--calibration", str(blank), "--to", "007"], 2, "--to is a version number"),
        (["--calibration", str(blank), "--to", "1"], 1, "exists; choose another version"),
        (["--calibration", str(blank), "--min-agreement", "1.5"], 2, "--min-agreement"),
    ]
    before = sorted(p.name for p in (quantized_repository / MODEL).iterdir())
    for extra, expected, message in cases:
        status = cli_main(["quantize", MODEL, "--repository", str(quantized_repository), *extra])
        assert status == expected, extra
        assert message in capsys.readouterr().err, extra
    assert sorted(p.name for p in (quantized_repository / MODEL).iterdir()) == before


def test_a_model_without_numbered_versions_is_refused(
    quantized_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``model.onnx`` directly in the model's directory: an INT8 version beside it would
    hide it (numbered versions win), so `quantize` asks for ``1/`` first."""
    flat = tmp_path / "models" / "flat"
    flat.mkdir(parents=True)
    source = quantized_repository / MODEL
    for name in ("model.yaml", "labels.txt"):
        shutil.copy(source / name, flat / name)
    shutil.copy(source / "1" / "model.onnx", flat / "model.onnx")
    status = cli_main(
        [
            "quantize",
            "flat",
            "--calibration",
            str(tmp_path),
            "--repository",
            str(tmp_path / "models"),
        ]
    )
    assert status == 2
    assert "move it into" in capsys.readouterr().err
    assert sorted(p.name for p in flat.iterdir()) == ["labels.txt", "model.onnx", "model.yaml"]
