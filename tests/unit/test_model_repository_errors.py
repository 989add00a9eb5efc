"""What users get wrong, refused at load with a message that names the file and the
problem, while every other model of the repository goes on serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from inference_gateway.inference.labels import imagenet_labels
from tests.helpers import make_settings, wait_until
from tests.images import CAT_CLASSES, CAT_PNG
from tests.model_repository import (
    NHWC_IMAGENET,
    builtin_onnx,
    write_yaml_model,
)

PNG = {"content-type": "image/png"}

#: The built-in network's own preprocessing, as model.yaml says it.
BUILTIN_YAML: dict[str, Any] = {
    "preprocess": {"scale": 1, "mean": [127, 127, 127], "std": [128, 128, 128]},
}


def _with(**preprocess: object) -> dict[str, Any]:
    return {"preprocess": {**BUILTIN_YAML["preprocess"], **preprocess}}


def _missing_file(root: Path, name: str) -> None:
    write_yaml_model(root, name, {1: builtin_onnx()}, BUILTIN_YAML)
    (root / name / "1" / "model.onnx").unlink()


def _corrupt_file(root: Path, name: str) -> None:
    write_yaml_model(root, name, {1: builtin_onnx()}, BUILTIN_YAML)
    (root / name / "1" / "model.onnx").write_bytes(b"not a protobuf at all")


#: What a file outside the repository holds: it must never reach a label or a metric.
OUTSIDE_SECRET = "ADMIN_TOKEN=outside-the-repository"  # noqa: S105 - a stand-in


def _labels_link_out(root: Path, name: str) -> None:
    write_yaml_model(root, name, {1: builtin_onnx()}, BUILTIN_YAML)
    elsewhere = root.parent / f"{root.name}-{name}-labels.txt"  # beside the repository
    elsewhere.write_text("".join(f"{OUTSIDE_SECRET}-{i}\n" for i in range(1000)))
    (root / name / "labels.txt").unlink()
    (root / name / "labels.txt").symlink_to(elsewhere)


def _yaml(config: dict[str, Any], labels: tuple[str, ...] | None = None) -> Callable[..., None]:
    def write(root: Path, name: str) -> None:
        write_yaml_model(root, name, {1: builtin_onnx()}, config, labels=labels)

    return write


def _nhwc_graph_said_nchw(root: Path, name: str) -> None:
    config = NHWC_IMAGENET.model_yaml()
    config["input"]["layout"] = "NCHW"
    write_yaml_model(root, name, {1: NHWC_IMAGENET.build()}, config)


#: name -> (how to break it, what the message must say besides the file)
BROKEN: dict[str, tuple[Callable[[Path, str], None], tuple[str, ...]]] = {
    "missing-file": (_missing_file, ("model.onnx", "no such file")),
    "corrupt-file": (_corrupt_file, ("model.onnx", "ONNX Runtime cannot open it")),
    "wrong-layout": (
        _nhwc_graph_said_nchw,
        ("model.onnx", "colour channels", "set input.layout: NHWC"),
    ),
    "wrong-crop": (_yaml(_with(crop={"center": 200})), ("model.onnx", "224", "200")),
    "wrong-labels": (_yaml(BUILTIN_YAML, labels=imagenet_labels()[:10]), ("model.onnx", "10")),
    "typo-key": (_yaml(_with(scael=1)), ("model.yaml", "preprocess.scael")),
    "short-mean": (_yaml(_with(mean=[0.5, 0.5])), ("model.yaml", "mean")),
    "zero-std": (_yaml(_with(std=[1, 0, 1])), ("model.yaml", "std")),
    "labels-link-out": (_labels_link_out, ("labels.txt", "leads outside the model repository")),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A repository with one good model and one broken model of each kind."""
    root = tmp_path_factory.mktemp("broken-repository")
    write_yaml_model(root, "good", {1: builtin_onnx()}, BUILTIN_YAML)
    for name, (breaker, _) in BROKEN.items():
        breaker(root, name)
    app = create_app(make_settings(model_repository=root), configure_logging=False)
    with TestClient(app) as test_client:
        wait_until(
            lambda: test_client.get("/models/good").json()["state"] == "READY",
            what="the good model to load",
        )
        wait_until(
            lambda: all(
                m["state"] == "UNAVAILABLE" for m in test_client.get("/models").json()["models"]
                if m["name"] != "good"
            ),
            what="every broken model to fail",
        )  # fmt: skip
        yield test_client


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_model_is_unavailable_with_its_reason_and_the_others_serve(
    client: TestClient, name: str
) -> None:
    model = client.get(f"/models/{name}").json()
    assert model["state"] == "UNAVAILABLE"
    reason = model["reason"]
    assert f"{name}/" in reason, reason  # the file, by its path
    for fragment in BROKEN[name][1]:
        assert fragment in reason, (fragment, reason)
    refused = client.post(f"/models/{name}/predict", content=CAT_PNG.read_bytes(), headers=PNG)
    assert refused.status_code == 503 and refused.json()["reason"] == "not_ready"
    assert name in refused.json()["detail"]
    served = client.post("/models/good/predict", content=CAT_PNG.read_bytes(), headers=PNG)
    assert served.status_code == 200
    assert served.json()["predictions"][0]["class_id"] in CAT_CLASSES


def test_ready_is_503_while_a_model_that_should_load_is_missing(client: TestClient) -> None:
    ready = client.get("/ready")
    assert ready.status_code == 503
    states = {m["name"]: m["state"] for m in ready.json()["models"]}
    assert states == {"good": "READY", **dict.fromkeys(BROKEN, "UNAVAILABLE")}


def test_a_file_linked_from_outside_the_repository_reaches_no_answer(client: TestClient) -> None:
    served = client.post("/models/good/predict", content=CAT_PNG.read_bytes(), headers=PNG)
    assert served.status_code == 200
    for path in ("/models", "/models/labels-link-out", "/ready", "/metrics"):
        answer = client.get(path)
        assert OUTSIDE_SECRET not in answer.text, path
        assert "broken-repository" not in answer.text, path  # no absolute path either
