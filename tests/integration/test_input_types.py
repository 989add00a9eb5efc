"""Models that take float16 images, or uint8 pixels they normalise themselves.

Built from the built-in model by graph surgery (`tests/input_types.py`) and served from
one repository beside it: on scikit-image's photographs each answers the built-in
model's top-1, over `/predict` and the Open Inference Protocol, whose metadata says what
each input takes.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference_gateway.app import create_app
from inference_gateway.inference.catalog import load_version
from inference_gateway.inference.onnx_export import export_to_repository
from inference_gateway.inference.repository import ModelConfigError, model_versions
from tests.helpers import make_settings, ready_client
from tests.images import SKIMAGE_DATA
from tests.input_types import FLOAT16_YAML, UINT8_YAML, with_input_type
from tests.photo_variants import PHOTOS
from tests.servers import free_port

pytestmark = pytest.mark.integration

BUILTIN = "efficientnet-lite0"
MODELS = {"lite0-uint8": ("uint8", UINT8_YAML), "lite0-fp16": ("float16", FLOAT16_YAML)}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("input-types") / "models"
    export_to_repository(root, model_cache_dir)
    source = root / BUILTIN / "1" / "model.onnx"
    for name, (kind, config) in MODELS.items():
        with_input_type(source, root / name / "1" / "model.onnx", kind)
        (root / name / "model.yaml").write_text(config, encoding="utf-8")
        shutil.copy(root / BUILTIN / "labels.txt", root / name / "labels.txt")
    return root


@pytest.fixture(scope="module")
def served(repository: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(model_repository=repository), configure_logging=False)
    with TestClient(app) as client:
        yield ready_client(client)


def _jpeg(name: str) -> bytes:
    with Image.open(SKIMAGE_DATA / name) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _center_pixels(name: str) -> np.ndarray:
    """A photograph's centre square at 224×224, RGB pixels (HWC, uint8)."""
    with Image.open(SKIMAGE_DATA / name) as image:
        rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    return np.asarray(rgb.crop((left, top, left + side, top + side)).resize((224, 224)))


def _top1(client: TestClient, model: str, photo: bytes) -> int:
    answer = client.post(
        f"/models/{model}/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["predictions"][0]["class_id"])


def test_each_input_type_gives_the_built_in_top1_on_real_photos(served: TestClient) -> None:
    for name in PHOTOS:
        photo = _jpeg(name)
        expected = _top1(served, BUILTIN, photo)
        for model in MODELS:
            assert _top1(served, model, photo) == expected, (model, name)


def test_the_open_inference_protocol_says_and_takes_each_input_type(served: TestClient) -> None:
    datatypes = {"lite0-uint8": "UINT8", "lite0-fp16": "FP16", BUILTIN: "FP32"}
    photo = _jpeg("chelsea.png")
    expected = _top1(served, BUILTIN, photo)
    for model, datatype in datatypes.items():
        metadata = served.get(f"/v2/models/{model}").json()
        assert metadata["inputs"][0]["datatype"] == datatype
        config = served.get(f"/v2/models/{model}/config").json()
        assert config["input"][0]["data_type"] == f"TYPE_{datatype}"
        body = {
            "inputs": [
                {
                    "name": "image", "shape": [1], "datatype": "BYTES",
                    "data": [{"b64": base64.b64encode(photo).decode()}],
                }
            ]
        }  # fmt: skip
        answer = served.post(f"/v2/models/{model}/infer", json=body)
        assert answer.status_code == 200, answer.text
        scores = np.asarray(answer.json()["outputs"][0]["data"])
        assert int(scores.argmax()) == expected
    # Pixels the client resized and cropped itself: UINT8, NHWC, as the metadata says.
    pixels = _center_pixels("chelsea.png")
    tensor = {
        "name": "pixels", "shape": [1, 224, 224, 3], "datatype": "UINT8",
        "data": pixels.reshape(-1).tolist(),
    }  # fmt: skip
    answer = served.post("/v2/models/lite0-uint8/infer", json={"inputs": [tensor]})
    assert answer.status_code == 200, answer.text
    refused = served.post(
        "/v2/models/lite0-uint8/infer", json={"inputs": [{**tensor, "datatype": "FP32"}]}
    )
    assert refused.status_code == 400 and "send UINT8" in refused.json()["error"]


def test_a_uint8_input_with_normalisation_in_model_yaml_is_refused(
    repository: Path, tmp_path: Path
) -> None:
    """The graph normalises uint8 pixels itself: a mean in model.yaml would be applied by
    nobody, so the version is refused saying which key to remove."""
    root = tmp_path / "models"
    shutil.copytree(repository / "lite0-uint8", root / "lite0-uint8")
    config = root / "lite0-uint8" / "model.yaml"
    with_mean = UINT8_YAML.replace(
        "  crop: {center: 224}\n", "  crop: {center: 224}\n  mean: [127, 127, 127]\n"
    )
    config.write_text(with_mean, encoding="utf-8")
    (version,) = model_versions(root, "lite0-uint8").versions
    with pytest.raises(ModelConfigError, match=r"takes tensor\(uint8\).*remove preprocess\.mean"):
        load_version(version, threads=1)


def test_grpc_says_and_takes_each_input_type(repository: Path) -> None:
    """tritonclient over gRPC: the metadata's datatype, and a tensor of that type
    answered with the built-in model's top-1."""
    import tritonclient.grpc as grpcclient

    port = free_port()
    app = create_app(
        make_settings(model_repository=repository, grpc_port=port), configure_logging=False
    )
    with TestClient(app) as client:
        ready_client(client)
        expected = _top1(client, BUILTIN, _jpeg("chelsea.png"))
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            for model, datatype in (("lite0-uint8", "UINT8"), ("lite0-fp16", "FP16")):
                metadata = grpc.get_model_metadata(model, as_json=True)
                name = metadata["inputs"][0]["name"]
                assert metadata["inputs"][0]["datatype"] == datatype
                pixels = _center_pixels("chelsea.png")
                if datatype == "FP16":
                    array = ((pixels.astype(np.float32) - 127) / 128).transpose(2, 0, 1)
                    array = array.astype(np.float16)[None]
                else:
                    array = pixels[None]
                tensor = grpcclient.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                scores = grpc.infer(model, [tensor]).as_numpy("logits")
                assert int(np.asarray(scores)[0].argmax()) == expected, model
        finally:
            grpc.close()
