"""The Open Inference Protocol over HTTP with the real `tritonclient.http`, unchanged.

A real ``inference-gateway serve`` with the built-in model; the client is NVIDIA's own
library, with its defaults (binary tensors, no Content-Type), so what works here works
for users who point their Triton clients at the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_CLASSES, CAT_PNG, COFFEE_PNG, ESPRESSO, ROCKET_JPG, cat_jpeg
from tests.oip import classes, predict_top1
from tests.servers import GatewayProcess, gateway_process

MODEL = "efficientnet-lite0"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with gateway_process({"WORKERS": "1"}) as process:
        yield process


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    yield client
    client.close()


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert "classification" in server["extensions"] and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 4
    assert config["input"][0]["format"] == "FORMAT_NCHW" and config["input"][0]["dims"] == [
        3,
        224,
        224,
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_preprocessed_fp32_tensor_gets_the_same_answer_as_predict(
    gateway: GatewayProcess, client: triton.InferenceServerClient, binary: bool
) -> None:
    data = CAT_PNG.read_bytes()
    tensor = prepare_image(data, ImageLimits(), PreprocessConfig()).tensor[None]
    image = triton.InferInput("input", list(tensor.shape), "FP32")
    image.set_data_from_numpy(tensor, binary_data=binary)
    scores = triton.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer(MODEL, [image], outputs=[scores], request_id="req-7")
    confidences = result.as_numpy("logits")
    assert confidences is not None and confidences.shape == (1, 1000)
    assert confidences.dtype == np.float32
    assert abs(float(confidences.sum()) - 1.0) < 1e-4  # the model's softmax
    assert int(np.argmax(confidences[0])) == predict_top1(gateway, data)
    assert result.get_response()["id"] == "req-7"


def test_encoded_images_as_bytes_with_class_count(
    gateway: GatewayProcess, client: triton.InferenceServerClient
) -> None:
    photos = [cat_jpeg(), COFFEE_PNG.read_bytes(), ROCKET_JPG.read_bytes()]
    images = triton.InferInput("input", [len(photos)], "BYTES")
    images.set_data_from_numpy(np.array(photos, dtype=np.object_))
    top = triton.InferRequestedOutput("logits", class_count=3)
    result = client.infer(MODEL, [images], outputs=[top])
    answers = classes(result)
    assert len(answers) == 3 and all(len(a) == 3 for a in answers)
    assert answers[0][0][1] in CAT_CLASSES and answers[1][0][1] == ESPRESSO
    for photo, answer in zip(photos, answers, strict=True):
        assert answer[0][1] == predict_top1(gateway, photo)
        assert [score for score, _, _ in answer] == sorted((s for s, _, _ in answer), reverse=True)


def test_errors_as_the_client_surfaces_them(client: triton.InferenceServerClient) -> None:
    image = triton.InferInput("input", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [image])
    assert unknown.value.status() == "404" and "nope" in unknown.value.message()
    with pytest.raises(InferenceServerException) as corrupt:
        client.infer(MODEL, [image])
    assert corrupt.value.status() == "400" and "image" in corrupt.value.message().lower()
    wrong = triton.InferInput("input", [1, 3, 100, 100], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 100, 100), dtype=np.float32))
    with pytest.raises(InferenceServerException) as shape:
        client.infer(MODEL, [wrong])
    assert shape.value.status() == "400" and "[N, 3, 224, 224]" in shape.value.message()


def test_an_image_client_style_flow(client: triton.InferenceServerClient) -> None:
    """What Triton's image_client example does: read metadata and config, preprocess on
    the client side as they say, infer, read the classification."""
    metadata = client.get_model_metadata(MODEL)
    config = client.get_model_config(MODEL)
    (input_meta,) = metadata["inputs"]
    (input_config,) = config["input"]
    assert input_config["format"] == "FORMAT_NCHW"
    channels, height, width = input_config["dims"]
    from PIL import Image

    with Image.open(CAT_PNG) as photo:
        pixels = np.asarray(photo.convert("RGB").resize((width, height)), dtype=np.float32)
    tensor = ((pixels - 127) / 128).transpose(2, 0, 1)[None].astype(np.float32)  # NCHW
    assert tensor.shape[1] == channels
    image = triton.InferInput(input_meta["name"], list(tensor.shape), input_meta["datatype"])
    image.set_data_from_numpy(tensor)
    output = triton.InferRequestedOutput(metadata["outputs"][0]["name"], class_count=1)
    ((best,),) = classes(client.infer(MODEL, [image], outputs=[output]))
    assert best[1] in CAT_CLASSES and best[2]
