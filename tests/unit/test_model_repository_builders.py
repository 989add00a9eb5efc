"""The test models of tests/model_repository.py, checked without the gateway.

Each convention variant, fed real photos preprocessed with its matching config, must
answer as the built-in model does (same top-1, logits within 1e-2), and must not when
the config is wrong in the one way it exercises. This is what makes the variants
proof, later, that the gateway honours each preprocessing key of ``model.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_PNG, COFFEE_PNG, ROCKET_JPG
from tests.model_repository import (
    BATCH1_NAMED,
    BGR_CAFFE,
    CONVENTIONS,
    HF_IMAGENET,
    HF_PREPROCESSOR_CONFIG,
    NHWC_IMAGENET,
    Convention,
    builtin_onnx,
    builtin_onnx_path,
    shifted_variant,
    write_hf_model,
    write_model,
    write_yaml_model,
)

PHOTOS = (CAT_PNG, COFFEE_PNG, ROCKET_JPG)
Logits = npt.NDArray[np.float32]


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _logits(session: ort.InferenceSession, config: PreprocessConfig) -> Logits:
    """The session's logits for every photo, one run per photo (fixed batches work)."""
    name = session.get_inputs()[0].name
    rows = []
    for photo in PHOTOS:
        tensor = prepare_image(photo.read_bytes(), ImageLimits(), config).tensor
        (out,) = session.run(None, {name: tensor[None]})
        rows.append(np.asarray(out)[0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def builtin_logits() -> Logits:
    """The built-in model's logits on the photos, with its own preprocessing."""
    return _logits(_session(builtin_onnx_path()), PreprocessConfig())


@pytest.mark.parametrize("convention", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_convention_variant_answers_as_the_builtin_model(
    convention: Convention, builtin_logits: Logits
) -> None:
    session = _session(convention.build())
    logits = _logits(session, convention.preprocess_config())
    np.testing.assert_array_equal(logits.argmax(axis=1), builtin_logits.argmax(axis=1))
    assert np.abs(logits - builtin_logits).max() < 1e-2


@pytest.mark.parametrize("convention", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_convention_variant_declares_its_input_and_output(convention: Convention) -> None:
    session = _session(convention.build())
    (given,) = session.get_inputs()
    (answer,) = session.get_outputs()
    assert given.name == convention.input_name
    assert answer.name == convention.output_name
    assert given.shape[1:] == list(convention.preprocess_config().tensor_shape)
    batch = given.shape[0]
    assert batch == convention.batch if convention.batch is not None else isinstance(batch, str)
    assert answer.shape[1:] == [1000]


def test_fixed_batch_variant_refuses_two_images() -> None:
    session = _session(BATCH1_NAMED.build())
    two = np.zeros((2, 3, 224, 224), dtype=np.float32)
    with pytest.raises(InvalidArgument, match="Expected: 1"):
        session.run(None, {"image": two})


@pytest.mark.parametrize(
    ("convention", "wrong"),
    [
        # mean and std given in the wrong colour order
        (NHWC_IMAGENET, {"mean": (0.406, 0.456, 0.485), "std": (0.225, 0.224, 0.229)}),
        # channels not swapped to BGR
        (BGR_CAFFE, {"color": "RGB"}),
        # scale left at 1 with means meant for 0..1 pixels
        (BATCH1_NAMED, {"scale": 1.0}),
    ],
    ids=["mean-std-order", "colour-order", "scale"],
)
def test_convention_variant_answers_otherwise_when_fed_the_wrong_way(
    convention: Convention, wrong: dict[str, object], builtin_logits: Logits
) -> None:
    session = _session(convention.build())
    logits = _logits(session, replace(convention.preprocess_config(), **wrong))  # type: ignore[arg-type]
    assert np.abs(logits - builtin_logits).max() > 0.5


def test_shifted_variant_answers_its_class_on_every_photo(builtin_logits: Logits) -> None:
    shifted = _logits(_session(shifted_variant(builtin_onnx(), 0, 100.0)), PreprocessConfig())
    assert shifted.argmax(axis=1).tolist() == [0, 0, 0]  # "tench"
    assert 0 not in builtin_logits.argmax(axis=1).tolist()
    np.testing.assert_allclose(shifted[:, 1:], builtin_logits[:, 1:], atol=1e-4)
    np.testing.assert_allclose(shifted[:, 0], builtin_logits[:, 0] + 100.0, atol=1e-3)


def test_shifted_variant_of_a_convention_variant_keeps_its_input() -> None:
    version2 = shifted_variant(NHWC_IMAGENET.build(), 0, 100.0)
    logits = _logits(_session(version2), NHWC_IMAGENET.preprocess_config())
    assert logits.argmax(axis=1).tolist() == [0, 0, 0]


def test_shifted_variant_refuses_a_class_the_model_lacks() -> None:
    with pytest.raises(ValueError, match="1000"):
        shifted_variant(builtin_onnx(), 1000, 1.0)


def test_convention_variant_refuses_a_name_the_graph_already_uses() -> None:
    with pytest.raises(ValueError, match="already names"):
        replace(BGR_CAFFE, input_name="logits").build()


def test_variants_leave_the_builtin_graph_unchanged() -> None:
    before = builtin_onnx().graph.input[0].name, len(builtin_onnx().graph.node)
    BGR_CAFFE.build()
    shifted_variant(builtin_onnx(), 0, 1.0)
    assert (builtin_onnx().graph.input[0].name, len(builtin_onnx().graph.node)) == before


def test_write_model_embeds_the_weights(tmp_path: Path) -> None:
    path = write_model(tmp_path / "1", BGR_CAFFE.build())
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]
    graph_only = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in graph_only.graph.initializer)
    assert path.stat().st_size > 15_000_000


def test_write_yaml_model_lays_out_a_repository_entry(tmp_path: Path) -> None:
    config = {"versions": {"all": True}, **BATCH1_NAMED.model_yaml()}
    versions = {1: BATCH1_NAMED.build(), 2: shifted_variant(BATCH1_NAMED.build(), 0, 100.0)}
    directory = write_yaml_model(tmp_path, "classifier", versions, config)
    assert directory == tmp_path / "classifier"
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "labels.txt", "model.yaml"]
    assert yaml.safe_load((directory / "model.yaml").read_text()) == config
    assert tuple((directory / "labels.txt").read_text().splitlines()) == imagenet_labels()
    assert config["max_batch_size"] == 1
    version2 = _session(directory / "2" / "model.onnx")
    answers = _logits(version2, BATCH1_NAMED.preprocess_config()).argmax(axis=1)
    assert answers.tolist() == [0, 0, 0]


def test_write_yaml_model_without_labels_or_yaml(tmp_path: Path) -> None:
    directory = write_yaml_model(tmp_path, "bare", {3: builtin_onnx()}, None, labels=())
    assert sorted(p.name for p in directory.iterdir()) == ["3"]


def test_convention_model_yaml_matches_its_preprocess_config() -> None:
    for convention in CONVENTIONS.values():
        section = convention.model_yaml()
        pre = section["preprocess"]
        assert (pre["scale"], tuple(pre["mean"]), tuple(pre["std"])) == (
            convention.scale,
            convention.mean,
            convention.std,
        )
        assert section["input"] == {
            "name": convention.input_name,
            "layout": convention.layout,
            "color": convention.color,
        }


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "version-dir"])
def test_write_hf_model_lays_out_an_optimum_export(tmp_path: Path, flat: bool) -> None:
    directory = write_hf_model(tmp_path, "hf-classifier", flat=flat)
    expected = tmp_path / "hf-classifier" if flat else tmp_path / "hf-classifier" / "1"
    assert directory == expected
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.onnx",
        "preprocessor_config.json",
    ]
    config = json.loads((directory / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(1000)] == list(imagenet_labels())
    assert config["model_type"] == "efficientnet"
    processor = json.loads((directory / "preprocessor_config.json").read_text())
    assert processor == HF_PREPROCESSOR_CONFIG
    # The processor config describes the graph it sits beside.
    assert processor["rescale_factor"] == pytest.approx(HF_IMAGENET.scale)
    assert tuple(processor["image_mean"]) == HF_IMAGENET.mean
    assert tuple(processor["image_std"]) == HF_IMAGENET.std
    session = _session(directory / "model.onnx")
    assert session.get_inputs()[0].name == "pixel_values"
    assert session.get_inputs()[0].shape[1:] == [3, 224, 224]
