"""Reading a model repository: configs, Hugging Face exports, versions, fingerprints, and
checking a version's config against its real ONNX graph."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference_gateway.inference.catalog import load_version
from inference_gateway.inference.preprocess import PreprocessConfig
from inference_gateway.inference.repository import (
    OUTSIDE_REPOSITORY,
    BatchingOverrides,
    ModelConfigError,
    ModelEntry,
    RepositoryScan,
    TensorInfo,
    VersionSource,
    resolve_io,
    scan_repository,
)

LABELS = "cat\ndog\nbird\n"
FLOAT = TensorProto.FLOAT

VIT_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224},
}


#: What transformers' image processors do when preprocessor_config.json says nothing.
HF_DEFAULTS = PreprocessConfig(
    resize_shortest=None,
    resize_to=(224, 224),
    crop=None,
    interpolation="bilinear",
    scale=1 / 255,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def make_model(
    root: Path,
    name: str = "cat",
    *,
    config: str | None = None,
    labels: str | None = LABELS,
    versions: Sequence[int] = (1,),
) -> Path:
    """A model directory: model.yaml (if given), labels.txt (if given), version dirs."""
    model_dir = root / name
    model_dir.mkdir(parents=True)
    if config is not None:
        write(model_dir / "model.yaml", config)
    if labels is not None:
        write(model_dir / "labels.txt", labels)
    for version in versions:
        write(model_dir / str(version) / "model.onnx", b"onnx graph")
    return model_dir


def hf_export(
    directory: Path,
    labels: Sequence[str] = ("cat", "dog"),
    preprocessor: dict[str, Any] | None = None,
    *,
    onnx_file: bool = True,
    **config: Any,
) -> Path:
    """What Optimum writes: config.json with id2label, preprocessor_config.json, model.onnx."""
    id2label = {str(i): label for i, label in enumerate(labels)}
    write(directory / "config.json", json.dumps({"id2label": id2label, **config}))
    write(
        directory / "preprocessor_config.json",
        json.dumps(VIT_PREPROCESSOR if preprocessor is None else preprocessor),
    )
    if onnx_file:
        write(directory / "model.onnx", b"onnx graph")
    return directory


def entry(scan: RepositoryScan, name: str = "cat") -> ModelEntry:
    found = scan.models[name]
    assert found.error is None, found.error
    return found


def one_version(root: Path, name: str = "cat") -> VersionSource:
    (version,) = entry(scan_repository(root), name).versions
    return version


def error_of(root: Path, name: str = "cat") -> str:
    found = scan_repository(root).models[name]
    assert found.error is not None and found.versions == ()
    return found.error


# --- model.yaml -----------------------------------------------------------------------------


EVERY_KEY = """\
backend: onnxruntime
max_batch_size: 8
max_batch_delay_ms: 2.5
max_queue_size: 128
labels: classes.txt
versions: {all: true}
input:
  name: pixel_values
  layout: NHWC
  color: BGR
preprocess:
  resize: {width: 300, height: 200}
  crop: {width: 160, height: 120}
  interpolation: bicubic
  scale: 1.0
  mean: [103.9, 116.8, 123.7]
  std: [57.4, 57.1, 58.4]
output:
  name: logits
  activation: sigmoid
"""


def test_a_model_yaml_with_every_key_is_read_into_each_version(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path, config=EVERY_KEY, labels=None, versions=(1, 2))
    write(model_dir / "classes.txt", "a\nb\n")
    found = entry(scan_repository(tmp_path))
    assert [v.spec.version for v in found.versions] == ["1", "2"]
    source = found.versions[1]
    assert source.path == model_dir / "2" / "model.onnx"
    assert (source.input_name, source.output_name) == ("pixel_values", "logits")
    assert source.batching == BatchingOverrides(8, 2.5, 128)
    assert source.spec.name == "cat" and source.spec.labels == ("a", "b")
    assert source.spec.activation == "sigmoid"
    assert source.spec.preprocess == PreprocessConfig(
        resize_shortest=None,
        resize_to=(300, 200),
        crop=(160, 120),
        interpolation="bicubic",
        scale=1.0,
        mean=(103.9, 116.8, 123.7),
        std=(57.4, 57.1, 58.4),
        layout="NHWC",
        color="BGR",
    )


def test_without_model_yaml_the_documented_defaults_apply(tmp_path: Path) -> None:
    make_model(tmp_path, versions=(1, 2))
    source = one_version(tmp_path)
    assert source.spec.version == "2"  # latest: 1
    assert source.spec.labels == ("cat", "dog", "bird")
    assert source.spec.activation == "softmax"
    assert (source.input_name, source.output_name) == (None, None)
    assert source.batching == BatchingOverrides()  # the server's settings
    assert source.spec.preprocess == PreprocessConfig(
        resize_shortest=256,
        resize_to=None,
        crop=(224, 224),
        interpolation="bilinear",
        scale=1 / 255,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        layout="NCHW",
        color="RGB",
    )
    empty = make_model(tmp_path, "empty-yaml", config="")
    assert one_version(tmp_path, empty.name).spec.preprocess == source.spec.preprocess


@pytest.mark.parametrize(
    ("preprocess", "expected"),
    [
        ("resize: {shortest: 300}\n  crop: {center: 288}", (300, None, (288, 288))),
        ("resize: {width: 320, height: 240}\n  crop: null", (None, (320, 240), None)),
        ("resize: null\n  crop: {width: 64, height: 32}", (None, None, (64, 32))),
    ],
    ids=["shortest-center", "exact-no-crop", "no-resize-crop"],
)
def test_resize_and_crop_forms_map_onto_the_preprocessing(
    tmp_path: Path, preprocess: str, expected: tuple[Any, Any, Any]
) -> None:
    make_model(tmp_path, config=f"preprocess:\n  {preprocess}\n")
    pre = one_version(tmp_path).spec.preprocess
    assert (pre.resize_shortest, pre.resize_to, pre.crop) == expected


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("max_batch_sise: 4\n", "max_batch_sise"),
        ("preprocess:\n  scael: 1.0\n", "preprocess.scael"),
        ("input:\n  layuot: NHWC\n", "input.layuot"),
        ("preprocess:\n  resize: {shortest: 256, longest: 512}\n", "preprocess.resize.longest"),
        ("versions: {latest: 1, newest: 2}\n", "versions.newest"),
    ],
)
def test_an_unknown_key_anywhere_is_named_with_the_file(
    tmp_path: Path, config: str, key: str
) -> None:
    make_model(tmp_path, config=config)
    assert error_of(tmp_path) == f"{tmp_path / 'cat' / 'model.yaml'}: unknown key '{key}'"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("backend: torch\n", "backend: input should be 'onnxruntime' (got 'torch')"),
        ("input: {layout: NHCW}\n", "input.layout: input should be 'NCHW' or 'NHWC' (got 'NHCW')"),
        ("preprocess: {mean: [0.5, 0.5]}\n", "preprocess.mean: needs 3 values, one per channel"),
        ("preprocess: {std: [0.2, 0, 0.2]}\n", "preprocess.std: must not contain 0"),
        ("preprocess: {interpolation: area}\n", "preprocess.interpolation: input should be"),
        ("preprocess: {resize: {width: 10}}\n", "preprocess.resize: give either {shortest: S}"),
        ("preprocess: {crop: {center: 9, width: 9, height: 9}}\n", "preprocess.crop: give either"),
        ("output: {activation: relu}\n", "output.activation: input should be 'softmax'"),
        ("max_batch_size: '4'\n", "max_batch_size: input should be a valid integer (got '4')"),
        ("max_batch_size: 0\n", "max_batch_size: input should be greater than or equal to 1"),
        ("versions: {}\n", "versions: give exactly one of"),
        ("versions: {all: false}\n", "versions: all must be true"),
        ("versions: {latest: 1, all: true}\n", "versions: give exactly one of"),
        ("labels: [cat, dog, cat]\n", "labels: 'cat' appears twice"),
        ("labels: [cat, '  ', dog]\n", "labels: entry 1 is blank"),
        ("labels: [cat, yes]\n", "labels: entry 1 is True, not text (quote it)"),
        ("labels: []\n", "labels: the list is empty"),
        ("- a list\n", "must be a mapping of keys to values"),
        ("input: null\n", "input: must be a mapping of keys to values (got None)"),
        (
            "preprocess: {resize: 256}\n",
            "preprocess.resize: must be a mapping of keys to values (got 256)",
        ),
        (
            "preprocess: {mean: [a, 0, 0]}\n",
            "preprocess.mean[0]: input should be a valid number (got 'a')",
        ),
    ],
)
def test_an_invalid_value_is_one_sentence_naming_the_file_and_the_key(
    tmp_path: Path, config: str, problem: str
) -> None:
    make_model(tmp_path, config=config)
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'cat' / 'model.yaml'}: ")
    assert problem in message
    assert "\n" not in message


def test_yaml_that_does_not_parse_names_the_file_and_the_line(tmp_path: Path) -> None:
    make_model(tmp_path, config="preprocess:\n  mean: [0.5, 0.5\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'cat' / 'model.yaml'}: not valid YAML: ")
    assert "line 3" in message


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    make_model(tmp_path, config="max_batch_size: 4\nmax_batch_size: 1\n")
    message = error_of(tmp_path)
    assert "model.yaml: not valid YAML: the key 'max_batch_size' is given twice" in message


def test_preprocessing_that_cannot_give_one_size_names_the_file(tmp_path: Path) -> None:
    make_model(tmp_path, config="preprocess:\n  resize: {shortest: 200}\n  crop: {center: 224}\n")
    message = error_of(tmp_path)
    assert message == (
        f"{tmp_path / 'cat' / 'model.yaml'}: the crop (224, 224) is larger than the "
        "resized image (200, 200)"
    )


# --- labels ---------------------------------------------------------------------------------


def test_labels_trailing_whitespace_and_final_newlines_are_dropped(tmp_path: Path) -> None:
    make_model(tmp_path, labels="cat \ndog\t\nbird\n\n")
    assert one_version(tmp_path).spec.labels == ("cat", "dog", "bird")


def test_inline_labels_are_used_in_order(tmp_path: Path) -> None:
    make_model(tmp_path, config="labels: [zebra, 'yak ', '1']\n", labels=None)
    assert one_version(tmp_path).spec.labels == ("zebra", "yak", "1")


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (None, "labels file not found"),
        ("", "labels file is empty"),
        ("\n \n", "labels file is empty"),
        ("cat\n\ndog\n", "blank line 2; one label per line, in class order"),
    ],
    ids=["missing", "empty", "only-blank", "blank-inside"],
)
def test_a_labels_file_missing_empty_or_with_gaps_is_an_error(
    tmp_path: Path, labels: str | None, problem: str
) -> None:
    make_model(tmp_path, labels=labels)
    assert error_of(tmp_path) == f"{tmp_path / 'cat' / 'labels.txt'}: {problem}"


def test_a_labels_file_with_a_repeated_label_is_made_unique_with_a_warning(
    tmp_path: Path,
) -> None:
    make_model(tmp_path, labels="crane\nbird\ncrane\n", versions=(1, 2))
    scan = scan_repository(tmp_path)
    assert all(v.spec.labels == ("crane", "bird", "crane (2)") for v in scan.models["cat"].versions)
    assert scan.warnings == (
        f"{tmp_path / 'cat' / 'labels.txt'}: label 'crane' appears again at class 2; "
        "served as 'crane (2)'",
    )


def test_a_named_labels_file_must_stay_inside_the_model_directory(tmp_path: Path) -> None:
    write(tmp_path / "shared.txt", LABELS)
    make_model(tmp_path, config="labels: ../shared.txt\n")
    assert "labels must name a file inside" in error_of(tmp_path)
    make_model(tmp_path, "dog", config="labels: meta/names.txt\n", labels=None)
    write(tmp_path / "dog" / "meta" / "names.txt", "x\ny\n")
    assert one_version(tmp_path, "dog").spec.labels == ("x", "y")


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "selected"),
    [
        (None, ["5"]),
        ("{latest: 2}", ["3", "5"]),
        ("{latest: 9}", ["1", "3", "5"]),
        ("{all: true}", ["1", "3", "5"]),
        ("{specific: [3, 1]}", ["1", "3"]),
    ],
)
def test_the_version_policy_selects_versions_in_ascending_order(
    tmp_path: Path, policy: str | None, selected: list[str]
) -> None:
    make_model(
        tmp_path, config=None if policy is None else f"versions: {policy}\n", versions=(1, 5, 3)
    )
    found = entry(scan_repository(tmp_path))
    assert [v.spec.version for v in found.versions] == selected
    assert [v.path.parent.name for v in found.versions] == selected


def test_specific_versions_that_do_not_exist_are_named_with_those_that_do(tmp_path: Path) -> None:
    make_model(tmp_path, config="versions: {specific: [1, 4, 7]}\n", versions=(1, 2))
    assert error_of(tmp_path) == (
        f"{tmp_path / 'cat' / 'model.yaml'}: versions.specific names 4, 7, which do not exist "
        "(found: 1, 2)"
    )


def test_directories_that_are_not_version_numbers_are_ignored_with_a_warning(
    tmp_path: Path,
) -> None:
    model_dir = make_model(tmp_path, versions=(2,))
    for name in ("v3", "0", "01", "latest"):
        (model_dir / name).mkdir()
    (model_dir / ".cache").mkdir()
    scan = scan_repository(tmp_path)
    assert [v.spec.version for v in entry(scan).versions] == ["2"]
    assert scan.warnings == tuple(
        f"{model_dir / name}: not a version number (1, 2, ...); directory ignored"
        for name in ("0", "01", "latest", "v3")
    )


def test_a_model_without_any_version_is_an_error(tmp_path: Path) -> None:
    make_model(tmp_path, versions=())
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'cat'}: no version found")
    assert str(tmp_path / "cat" / "1" / "model.onnx") in message


def test_a_stray_graph_beside_numbered_versions_is_ignored_with_a_warning(
    tmp_path: Path,
) -> None:
    model_dir = make_model(tmp_path, versions=(1,))
    write(model_dir / "model.onnx", b"onnx graph")
    write(model_dir / "model.yml", "max_batch_size: 1\n")
    scan = scan_repository(tmp_path)
    assert [v.path for v in entry(scan).versions] == [model_dir / "1" / "model.onnx"]
    assert entry(scan).versions[0].batching == BatchingOverrides()
    assert scan.warnings == (
        f"{model_dir / 'model.yml'}: ignored; the config is model.yaml",
        f"{model_dir / 'model.onnx'}: ignored; this model's versions are the numbered "
        "directories 1",
    )


def test_a_version_directory_without_its_graph_is_still_listed(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path, versions=())
    (model_dir / "1").mkdir()
    source = one_version(tmp_path)
    assert source.path == model_dir / "1" / "model.onnx" and not source.path.exists()


# --- the repository as a whole ----------------------------------------------------------------


def test_names_that_are_not_model_names_are_skipped_with_a_warning(tmp_path: Path) -> None:
    make_model(tmp_path, "resnet-50_v1.5")
    for name in ("Cat", "-dash", "a" * 65, "with space"):
        make_model(tmp_path, name)
    make_model(tmp_path, ".hidden")
    write(tmp_path / "README.md", "my models")
    write(tmp_path / "stray.onnx", b"onnx graph")
    scan = scan_repository(tmp_path)
    assert list(scan.models) == ["resnet-50_v1.5"]
    skipped = [w for w in scan.warnings if "skipped; a model name is" in w]
    assert sorted(skipped) == sorted(
        f"{tmp_path / name}: skipped; a model name is 1-64 of a-z 0-9 . _ - starting with a "
        "letter or digit"
        for name in ("Cat", "-dash", "a" * 65, "with space")
    )
    assert f"{tmp_path / 'stray.onnx'}: ignored; a model goes in" in " ".join(scan.warnings)
    assert len(scan.warnings) == 5


def test_one_broken_model_does_not_hide_the_others(tmp_path: Path) -> None:
    make_model(tmp_path, "zebra")
    make_model(tmp_path, "broken", config="preprocess: {scael: 1}\n")
    make_model(tmp_path, "ant", labels=None)
    scan = scan_repository(tmp_path)
    assert list(scan.models) == ["ant", "broken", "zebra"]
    assert scan.models["zebra"].error is None and len(scan.models["zebra"].versions) == 1
    assert scan.models["broken"].error == (
        f"{tmp_path / 'broken' / 'model.yaml'}: unknown key 'preprocess.scael'"
    )
    assert scan.models["ant"].error == f"{tmp_path / 'ant' / 'labels.txt'}: labels file not found"


def test_a_missing_or_non_directory_root_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="the model repository does not exist"):
        scan_repository(tmp_path / "nowhere")
    with pytest.raises(ModelConfigError, match="the model repository is not a directory"):
        scan_repository(write(tmp_path / "file", "x"))
    assert scan_repository(tmp_path).models == {}


def test_messages_keep_a_relative_root_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_model(tmp_path / "models", config="preprocess: {scael: 1}\n")
    monkeypatch.chdir(tmp_path)
    assert scan_repository(Path("models")).models["cat"].error == (
        "models/cat/model.yaml: unknown key 'preprocess.scael'"
    )


# --- Hugging Face exports ---------------------------------------------------------------------


def test_a_hugging_face_export_in_the_model_directory_is_version_1(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "vit")
    (model_dir / "onnx").mkdir()  # Optimum's other files do not make warnings
    scan = scan_repository(tmp_path)
    (source,) = entry(scan, "vit").versions
    assert scan.warnings == ()
    assert source.path == model_dir / "model.onnx"
    assert source.spec.version == "1"
    assert source.spec.labels == ("cat", "dog")
    assert source.spec.activation == "softmax"
    assert source.spec.preprocess == HF_DEFAULTS


def test_hugging_face_files_beside_numbered_versions_serve_every_version(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "vit", onnx_file=False)
    for version in (1, 2):
        write(model_dir / str(version) / "model.onnx", b"onnx graph")
    found = entry(scan_repository(tmp_path), "vit")
    assert [v.spec.labels for v in found.versions] == [("cat", "dog")]  # latest: 1
    write(model_dir / "model.yaml", "versions: {all: true}\n")
    found = entry(scan_repository(tmp_path), "vit")
    assert [(v.spec.version, v.spec.labels) for v in found.versions] == [
        ("1", ("cat", "dog")),
        ("2", ("cat", "dog")),
    ]


def test_hugging_face_files_inside_each_version_belong_to_that_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "vit"
    hf_export(model_dir / "1", ["cat", "dog"])
    hf_export(model_dir / "2", ["cat", "dog", "fox"], {**VIT_PREPROCESSOR, "resample": 3})
    write(model_dir / "model.yaml", "versions: {all: true}\n")
    v1, v2 = entry(scan_repository(tmp_path), "vit").versions
    assert v1.spec.labels == ("cat", "dog") and v1.spec.preprocess.interpolation == "bilinear"
    assert v2.spec.labels == ("cat", "dog", "fox") and v2.spec.preprocess.interpolation == "bicubic"


def test_model_yaml_beside_a_hugging_face_export_overrides_only_its_own_keys(
    tmp_path: Path,
) -> None:
    model_dir = hf_export(tmp_path / "vit")
    write(model_dir / "model.yaml", "max_batch_size: 1\n")
    source = one_version(tmp_path, "vit")
    assert source.batching.max_batch_size == 1
    assert source.spec.labels == ("cat", "dog")
    assert source.spec.preprocess.resize_to == (224, 224)
    assert source.spec.preprocess.mean == (0.5, 0.5, 0.5)

    write(
        model_dir / "model.yaml",
        "labels: [a, b]\npreprocess:\n  mean: [0.4, 0.4, 0.4]\n  crop: {center: 200}\n"
        "output: {activation: none}\n",
    )
    source = one_version(tmp_path, "vit")
    assert source.spec.labels == ("a", "b")
    assert source.spec.activation == "none"
    pre = source.spec.preprocess
    assert (pre.resize_to, pre.crop, pre.mean, pre.std) == (
        (224, 224),
        (200, 200),
        (0.4, 0.4, 0.4),
        (0.5, 0.5, 0.5),
    )


def test_a_minimal_hugging_face_processor_gets_transformers_defaults(tmp_path: Path) -> None:
    hf_export(tmp_path / "vit", preprocessor={})
    assert one_version(tmp_path, "vit").spec.preprocess == HF_DEFAULTS


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224},
            (256, None, (224, 224)),
        ),
        (
            {"size": 288, "do_center_crop": True, "crop_size": {"height": 200, "width": 240}},
            (288, None, (240, 200)),
        ),
        ({"size": {"height": 384, "width": 320}}, (None, (320, 384), None)),
        ({"do_resize": False, "do_center_crop": True}, (None, None, (224, 224))),
    ],
    ids=["shortest-edge", "bare-int", "height-width", "crop-only"],
)
def test_hugging_face_size_and_crop_forms(
    tmp_path: Path, keys: dict[str, Any], expected: tuple[Any, Any, Any]
) -> None:
    hf_export(tmp_path / "vit", preprocessor=keys)
    pre = one_version(tmp_path, "vit").spec.preprocess
    assert (pre.resize_shortest, pre.resize_to, pre.crop) == expected


def test_hugging_face_rescale_normalise_and_resample_switches(tmp_path: Path) -> None:
    hf_export(
        tmp_path / "vit",
        preprocessor={"do_rescale": False, "do_normalize": False, "resample": 1},
    )
    pre = one_version(tmp_path, "vit").spec.preprocess
    assert (pre.scale, pre.mean, pre.std, pre.interpolation) == (
        1.0,
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        "lanczos",
    )


def test_a_multi_label_hugging_face_model_gets_sigmoid(tmp_path: Path) -> None:
    hf_export(tmp_path / "tags", problem_type="multi_label_classification")
    assert one_version(tmp_path, "tags").spec.activation == "sigmoid"


@pytest.mark.parametrize(
    ("config", "preprocessor", "file", "problem"),
    [
        ({"id2label": {"0": "cat", "2": "dog"}}, {}, "config.json", "missing 1"),
        ({"id2label": {"zero": "cat"}}, {}, "config.json", "key 'zero' is not a class id"),
        ({"id2label": {"0": "cat", "1": ""}}, {}, "config.json", "id2label['1'] is ''"),
        ({}, {"resample": 4}, "preprocessor_config.json", "resample 4 is not supported"),
        ({}, {"image_mean": [0.5, 0.5]}, "preprocessor_config.json", "image_mean needs 3"),
        ({}, {"image_std": [0.5, 0.0, 0.5]}, "preprocessor_config.json", "must not contain 0"),
        ({}, {"size": {"longest_edge": 512}}, "preprocessor_config.json", "is not supported"),
        ({}, {"do_resize": "yes"}, "preprocessor_config.json", "do_resize must be true or false"),
        (
            {},
            {"size": {"shortest_edge": 224}},
            "preprocessor_config.json",
            "preprocessing must give every image one size",
        ),
    ],
)
def test_a_broken_hugging_face_config_names_the_file(
    tmp_path: Path, config: dict[str, Any], preprocessor: dict[str, Any], file: str, problem: str
) -> None:
    model_dir = hf_export(tmp_path / "vit", preprocessor=preprocessor)
    if config:
        write(model_dir / "config.json", json.dumps(config))
    message = error_of(tmp_path, "vit")
    assert message.startswith(f"{model_dir / file}: ")
    assert problem in message


def test_hugging_face_json_that_does_not_parse_names_the_file(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "vit")
    write(model_dir / "preprocessor_config.json", '{"size": ')
    assert error_of(tmp_path, "vit").startswith(
        f"{model_dir / 'preprocessor_config.json'}: not valid JSON"
    )


def test_a_config_json_without_id2label_falls_back_to_labels_txt(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "vit")
    write(model_dir / "config.json", json.dumps({"model_type": "vit"}))
    assert error_of(tmp_path, "vit") == (
        f"{model_dir / 'labels.txt'}: labels file not found, and "
        f"{model_dir / 'config.json'} has no id2label"
    )
    write(model_dir / "labels.txt", "x\ny\n")
    assert one_version(tmp_path, "vit").spec.labels == ("x", "y")


def test_a_labels_txt_beside_id2label_is_reported_as_unused(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "vit")
    write(model_dir / "labels.txt", "x\ny\n")
    scan = scan_repository(tmp_path)
    assert entry(scan, "vit").versions[0].spec.labels == ("cat", "dog")
    assert len(scan.warnings) == 1 and "labels.txt: not used" in scan.warnings[0]
    write(model_dir / "model.yaml", "labels: labels.txt\n")
    scan = scan_repository(tmp_path)
    assert entry(scan, "vit").versions[0].spec.labels == ("x", "y") and scan.warnings == ()


# --- fingerprints -----------------------------------------------------------------------------


def fingerprints(root: Path) -> dict[str, str]:
    return {v.spec.version: v.fingerprint for v in entry(scan_repository(root)).versions}


def hf_versioned_repo(root: Path) -> Path:
    model_dir = make_model(root, versions=(1, 2))
    write(model_dir / "1" / "model.onnx.data", b"weights")
    hf_export(model_dir, onnx_file=False)
    write(model_dir / "model.yaml", "versions: {all: true}\nlabels: labels.txt\n")
    return model_dir


def test_a_fingerprint_is_stable_while_nothing_changes(tmp_path: Path) -> None:
    model_dir = hf_versioned_repo(tmp_path)
    before = fingerprints(tmp_path)
    assert len(set(before.values())) == 2
    write(model_dir / ".model.yaml.swp", "editor state")  # hidden files do not count
    assert fingerprints(tmp_path) == before


@pytest.mark.parametrize(
    "changed",
    [
        "model.yaml",
        "labels.txt",
        "config.json",
        "preprocessor_config.json",
        "1/model.onnx",
        "1/model.onnx.data",
    ],
)
@pytest.mark.parametrize("how", ["content", "mtime"])
def test_a_fingerprint_changes_with_each_file_the_version_depends_on(
    tmp_path: Path, changed: str, how: str
) -> None:
    model_dir = hf_versioned_repo(tmp_path)
    before = fingerprints(tmp_path)
    path = model_dir / changed
    if how == "content":
        with path.open("a", encoding="utf-8") as handle:
            handle.write(" ")
    else:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = fingerprints(tmp_path)
    assert after["1"] != before["1"]
    model_level = "/" not in changed
    assert (after["2"] != before["2"]) is model_level


def test_a_flat_export_fingerprints_its_external_weights(tmp_path: Path) -> None:
    model_dir = hf_export(tmp_path / "cat")
    write(model_dir / "model.onnx_data", b"weights")
    before = fingerprints(tmp_path)
    write(model_dir / "model.onnx_data", b"new weights")
    assert fingerprints(tmp_path) != before


# --- symbolic links ---------------------------------------------------------------------------


def link_out(model_dir: Path, relative: str, outside: Path) -> Path:
    """Move ``model_dir/relative`` to ``outside`` and leave a symbolic link to it there."""
    path = model_dir / relative
    target = outside / relative.replace("/", "-")
    outside.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    path.symlink_to(target)
    return path


@pytest.mark.parametrize(
    "linked",
    [
        "model.yaml",
        "labels.txt",
        "config.json",
        "preprocessor_config.json",
        "1",
        "1/model.onnx",
        "1/model.onnx.data",
    ],
)
def test_a_file_that_links_out_of_the_repository_refuses_its_model(
    tmp_path: Path, linked: str
) -> None:
    root = tmp_path / "repository"
    model_dir = hf_versioned_repo(root)
    path = link_out(model_dir, linked, tmp_path / "elsewhere")
    assert error_of(root) == f"{path}: {OUTSIDE_REPOSITORY}"


def test_a_model_directory_that_links_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    make_model(root, "dog")
    elsewhere = make_model(tmp_path / "elsewhere")
    (root / "cat").symlink_to(elsewhere)
    assert error_of(root) == f"{root / 'cat'}: {OUTSIDE_REPOSITORY}"
    assert entry(scan_repository(root), "dog").versions  # the others still serve


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_labels_through_a_link_to_the_environment_are_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "never-a-label-0123456789")
    model_dir = make_model(tmp_path, config="labels: sub/classes.txt\n", labels=None)
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "classes.txt").symlink_to("/proc/self/environ")
    scan = scan_repository(tmp_path)
    assert scan.models["cat"].versions == ()
    assert scan.models["cat"].error == f"{model_dir / 'sub' / 'classes.txt'}: {OUTSIDE_REPOSITORY}"
    assert "never-a-label" not in repr(scan)


def test_a_labels_file_in_a_directory_that_links_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    model_dir = make_model(root, config="labels: meta/names.txt\n", labels=None)
    write(tmp_path / "elsewhere" / "names.txt", "x\ny\n")
    (model_dir / "meta").symlink_to(tmp_path / "elsewhere")
    assert error_of(root) == f"{model_dir / 'meta' / 'names.txt'}: {OUTSIDE_REPOSITORY}"


def test_a_weights_directory_that_links_out_is_refused_however_deep(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    model_dir = make_model(root)
    write(root / ".shared" / "weights" / "w.bin", b"weights")  # inside: fine
    (model_dir / "1" / "ext").symlink_to(root / ".shared")
    assert entry(scan_repository(root)).versions
    secret = write(tmp_path / "elsewhere.bin", b"not the repository's")
    (root / ".shared" / "weights" / "w.bin").unlink()
    (root / ".shared" / "weights" / "w.bin").symlink_to(secret)
    assert (
        error_of(root) == f"{model_dir / '1' / 'ext' / 'weights' / 'w.bin'}: {OUTSIDE_REPOSITORY}"
    )


def test_links_that_stay_inside_the_repository_keep_working(tmp_path: Path) -> None:
    real = tmp_path / "real"
    model_dir = make_model(real, config="versions: {all: true}\nlabels: meta/names.txt\n")
    write(real / ".shared" / "names.txt", "x\ny\n")  # hidden: not a model
    (model_dir / "meta").symlink_to(Path("..") / ".shared")
    (model_dir / "2").symlink_to("1")  # a version directory linked to another
    (model_dir / "1" / ".model.onnx.lock").symlink_to("nowhere")  # dangling, but inside
    (tmp_path / "current").symlink_to(real)  # the root itself may be a link
    scan = scan_repository(tmp_path / "current")
    assert [v.spec.version for v in entry(scan).versions] == ["1", "2"]
    assert all(v.spec.labels == ("x", "y") for v in entry(scan).versions)
    assert entry(scan).versions[0].repository == real.resolve()


def test_loading_refuses_a_graph_that_appeared_as_a_link_out_after_the_scan(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repository"
    model_dir = make_model(root, versions=())
    (model_dir / "1").mkdir()  # the graph is not there yet: loading it is retried
    version = one_version(root)
    graph(tmp_path / "elsewhere.onnx")  # a real graph that would load
    version.path.symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ModelConfigError) as raised:
        load_version(version, threads=1)
    assert str(raised.value) == f"{version.path}: {OUTSIDE_REPOSITORY}"
    version.path.unlink()
    (tmp_path / "elsewhere.onnx").rename(version.path)  # copied in: it loads
    load_version(version, threads=1).backend.close()


# --- resolve_io against real ONNX graphs -------------------------------------------------------


def graph(
    path: Path,
    inputs: Sequence[tuple[str, int, Sequence[int | str | None]]] = (
        ("x", FLOAT, ["batch", 3, 224, 224]),
    ),
    *,
    classes: int = 3,
    output_rank: int = 2,
    label_first: bool = False,
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Write a tiny classifier (mean over the image, one MatMul) and describe it as
    ONNX Runtime does. Extra inputs scale the scores; ``label_first`` adds an int64
    ArgMax output before the scores, as scikit-learn exports do."""
    name, dtype, dims = inputs[0]
    batch = dims[0]
    nodes = []
    image = name
    if dtype != FLOAT:
        nodes.append(helper.make_node("Cast", [name], ["image"], to=FLOAT))
        image = "image"
    nodes += [
        helper.make_node(
            "ReduceMean", [image], ["mean"], axes=list(range(1, len(dims))), keepdims=0
        ),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["column"]),
        helper.make_node("MatMul", ["column", "weights"], ["scores0"]),
    ]
    scores = "scores0"
    for extra, _, _ in inputs[1:]:
        nodes.append(helper.make_node("Mul", [scores, extra], [f"{scores}_{extra}"]))
        scores = f"{scores}_{extra}"
    initializers = [
        numpy_helper.from_array(np.ones((1, classes), np.float32), "weights"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
    ]
    if output_rank == 4:
        nodes.append(helper.make_node("Unsqueeze", [scores, "axes23"], ["scores"]))
        out_dims: list[int | str | None] = [batch, classes, 1, 1]
    else:
        nodes.append(helper.make_node("Identity", [scores], ["scores"]))
        out_dims = [batch, classes]
    outputs = [helper.make_tensor_value_info("scores", FLOAT, out_dims)]
    if label_first:
        nodes.append(helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0))
        outputs.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64, [batch]))
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "classifier",
            [helper.make_tensor_value_info(n, t, list(d)) for n, t, d in inputs],
            outputs,
            initializers,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def info(args: Any) -> TensorInfo:
        return TensorInfo(name=args.name, shape=tuple(args.shape), type=args.type)

    return [info(i) for i in session.get_inputs()], [info(o) for o in session.get_outputs()]


def source(root: Path, config: str = "", labels: str = LABELS) -> VersionSource:
    make_model(root, config=config, labels=labels)
    return one_version(root)


def test_a_matching_graph_resolves_to_its_input_and_output(tmp_path: Path) -> None:
    version = source(tmp_path)
    assert resolve_io(version, *graph(version.path)) == ("x", "scores")


def test_an_nhwc_graph_matches_an_nhwc_config(tmp_path: Path) -> None:
    version = source(tmp_path, "input: {layout: NHWC}\n")
    assert resolve_io(version, *graph(version.path, [("x", FLOAT, [None, 224, 224, 3])])) == (
        "x",
        "scores",
    )


def test_symbolic_dimensions_always_pass(tmp_path: Path) -> None:
    version = source(tmp_path)
    io = graph(version.path, [("x", FLOAT, ["n", "c", "h", "w"])])
    assert resolve_io(version, *io) == ("x", "scores")
    symbolic_classes = [TensorInfo("scores", ("n", "classes"), "tensor(float)")]
    assert resolve_io(version, io[0], symbolic_classes) == ("x", "scores")


def test_a_named_input_that_does_not_exist_lists_the_real_ones(tmp_path: Path) -> None:
    version = source(tmp_path, "input: {name: pixel_values}\n")
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *graph(version.path))
    assert str(raised.value) == (
        f"{version.path}: has no input named 'pixel_values'; its inputs are 'x' "
        "(set input.name in model.yaml)"
    )


def test_several_inputs_without_a_name_are_listed(tmp_path: Path) -> None:
    version = source(tmp_path)
    io = graph(version.path, [("x", FLOAT, ["b", 3, 224, 224]), ("temperature", FLOAT, [1])])
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *io)
    assert str(raised.value) == (
        f"{version.path}: the graph has 2 inputs ('x', 'temperature'); set input.name in "
        "model.yaml to the image input"
    )


def test_a_named_input_among_several_is_chosen(tmp_path: Path) -> None:
    version = source(tmp_path, "input: {name: x}\n")
    io = graph(version.path, [("x", FLOAT, ["b", 3, 224, 224]), ("temperature", FLOAT, [1])])
    assert resolve_io(version, *io) == ("x", "scores")


def test_channels_not_at_the_layouts_position_suggest_the_other_layout(tmp_path: Path) -> None:
    version = source(tmp_path)
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *graph(version.path, [("x", FLOAT, ["b", 224, 224, 3])]))
    assert str(raised.value) == (
        f"{version.path}: input 'x' has shape (b, 224, 224, 3): NCHW puts the 3 colour "
        "channels at dimension 1, which is 224; set input.layout: NHWC in model.yaml"
    )
    with pytest.raises(ModelConfigError, match=r"at dimension 1, which is 1$"):
        resolve_io(version, *graph(version.path, [("x", FLOAT, ["b", 1, 224, 224])]))


def test_a_fixed_batch_of_one_needs_max_batch_size_1(tmp_path: Path) -> None:
    version = source(tmp_path, "max_batch_size: 4\n")
    io = graph(version.path, [("x", FLOAT, [1, 3, 224, 224])])
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *io)
    assert str(raised.value).startswith(
        f"{version.path}: input 'x' has a fixed batch size of 1 but batches of up to 4 "
        "would be sent; set max_batch_size: 1 in model.yaml"
    )
    unset = VersionSource(
        version.spec, version.path, None, None, BatchingOverrides(), version.fingerprint
    )
    with pytest.raises(ModelConfigError, match="up to the server limit"):
        resolve_io(unset, *io)
    single = VersionSource(
        version.spec, version.path, None, None, BatchingOverrides(1), version.fingerprint
    )
    assert resolve_io(single, *io) == ("x", "scores")


def test_a_fixed_batch_larger_than_one_is_refused(tmp_path: Path) -> None:
    version = source(tmp_path)
    with pytest.raises(ModelConfigError, match=r"fixed batch size of 8; .* dynamic batch"):
        resolve_io(version, *graph(version.path, [("x", FLOAT, [8, 3, 224, 224])]))


def test_a_named_output_that_does_not_exist_lists_the_real_ones(tmp_path: Path) -> None:
    version = source(tmp_path, "output: {name: logits}\n")
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *graph(version.path, label_first=True))
    assert str(raised.value) == (
        f"{version.path}: has no output named 'logits'; its outputs are 'label', 'scores' "
        "(set output.name in model.yaml)"
    )


def test_a_first_output_that_is_not_scores_points_at_output_name(tmp_path: Path) -> None:
    version = source(tmp_path)
    io = graph(version.path, label_first=True)
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *io)
    assert str(raised.value) == (
        f"{version.path}: output 'label' is tensor(int64), not class scores; set output.name "
        "in model.yaml to the scores output (outputs: 'label', 'scores')"
    )
    named = source(tmp_path / "named", "output: {name: scores}\n")
    assert resolve_io(named, *graph(named.path, label_first=True)) == ("x", "scores")


#: A graph that does not fit the configuration -> what the message says after the path.
MISFITS: dict[str, tuple[dict[str, Any], str]] = {
    "not 4-D": (
        {"inputs": [("x", FLOAT, ["b", 224, 224])]},
        "input 'x' has shape (b, 224, 224); an image input is 4-D (batch, 3, height, width)",
    ),
    "another image size": (
        {"inputs": [("x", FLOAT, ["b", 3, 256, 320])]},
        "input 'x' takes 320×256 images (width×height) but the preprocessing gives 224×224; "
        "set preprocess.crop (or preprocess.resize) in model.yaml to the model's size",
    ),
    "not an image type": (
        {"inputs": [("x", TensorProto.INT64, ["b", 3, 224, 224])]},
        "input 'x' takes tensor(int64); the gateway feeds images as tensor(float), "
        "tensor(float16) or tensor(uint8) (pixels as they are)",
    ),
    "scores not 2-D": (
        {"output_rank": 4},
        "output 'scores' has shape (batch, 3, 1, 1); the scores must be 2-D (batch, classes)",
    ),
    "another class count": (
        {"classes": 1000},
        "output 'scores' has 1000 classes but there are 3 labels",
    ),
}


@pytest.mark.parametrize("misfit", list(MISFITS))
def test_a_graph_that_does_not_fit_says_what_and_where(tmp_path: Path, misfit: str) -> None:
    options, message = MISFITS[misfit]
    version = source(tmp_path)
    with pytest.raises(ModelConfigError) as raised:
        resolve_io(version, *graph(version.path, **options))
    assert str(raised.value) == f"{version.path}: {message}"
