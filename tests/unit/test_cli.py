"""The command line: ``predict`` classifies files without a server, ``export-onnx
--repository`` writes the built-in model as a repository entry; bad config exits 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from inference_gateway.cli import main
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_PNG, COFFEE_PNG
from tests.model_repository import builtin_onnx_path


def test_predict_prints_a_table_with_the_cat(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert str(CAT_PNG) in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert {int(r[1]) for r in rows} & set(range(281, 286))


def test_predict_json_for_several_images(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), str(COFFEE_PNG), "--json", "--top-k", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["predictions"][0]["class_id"] == 967


def test_predict_reports_unreadable_and_invalid_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", str(text), str(tmp_path / "missing.jpg")]) == 1
    out = capsys.readouterr().out
    assert "notes.txt: error:" in out and "missing.jpg: error:" in out


def test_predict_rejects_bad_top_k(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), "--top-k", "0"]) == 2


def test_invalid_configuration_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "lots")
    assert main(["serve"]) == 2
    assert "MAX_IMAGE_PIXELS" in capsys.readouterr().err


# --- export-onnx --repository: the built-in model as a model-repository entry


def _run_onnx(path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: tensor[None]})
    return np.asarray(logits)


def _preprocess_from_yaml(config: dict[str, Any]) -> PreprocessConfig:
    """What model.yaml's input and preprocess sections say, as a PreprocessConfig."""
    pre, given = config["preprocess"], config["input"]
    return PreprocessConfig(
        resize_shortest=pre["resize"]["shortest"],
        crop=(pre["crop"]["center"], pre["crop"]["center"]),
        interpolation=pre["interpolation"],
        scale=pre["scale"],
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        layout=given["layout"],
        color=given["color"],
    )


def test_export_onnx_writes_a_self_contained_repository_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    assert main(["export-onnx", "--repository", str(root)]) == 0
    model_dir = root / "efficientnet-lite0"
    out = capsys.readouterr().out
    for written in ("model.yaml", "labels.txt", "1/model.onnx"):
        assert str(model_dir / written) in out
    # Nothing half-written or staged is left beside it, and the weights are embedded.
    assert [p.name for p in root.iterdir()] == ["efficientnet-lite0"]
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]

    graph = model_dir / "1" / "model.onnx"
    tensor = prepare_image(CAT_PNG.read_bytes(), ImageLimits(), PreprocessConfig()).tensor
    np.testing.assert_array_equal(_run_onnx(graph, tensor), _run_onnx(builtin_onnx_path(), tensor))

    labels = (model_dir / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert tuple(labels) == imagenet_labels()
    assert len(labels) == 1000


def test_exported_model_yaml_states_the_builtin_preprocessing(tmp_path: Path) -> None:
    assert main(["export-onnx", "--repository", str(tmp_path)]) == 0
    model_dir = tmp_path / "efficientnet-lite0"
    config = yaml.safe_load((model_dir / "model.yaml").read_text(encoding="utf-8"))
    assert _preprocess_from_yaml(config) == PreprocessConfig()
    assert config["preprocess"]["scale"] == 1  # stated, not the 1/255 default
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
    assert config["input"]["name"] == session.get_inputs()[0].name
    assert config["output"] == {"name": session.get_outputs()[0].name, "activation": "softmax"}
    assert config["labels"] == "labels.txt"
    assert config["versions"] == {"latest": 1}


def test_export_onnx_leaves_an_existing_export_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export-onnx", "--repository", str(tmp_path)]) == 0
    labels = tmp_path / "efficientnet-lite0" / "labels.txt"
    labels.write_text("edited by hand\n")
    capsys.readouterr()

    assert main(["export-onnx", "--repository", str(tmp_path)]) == 0
    assert "already exists" in capsys.readouterr().out
    assert labels.read_text() == "edited by hand\n"

    assert main(["export-onnx", "--repository", str(tmp_path), "--force"]) == 0
    assert str(labels) in capsys.readouterr().out
    assert len(labels.read_text().splitlines()) == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["efficientnet-lite0"]


def test_export_onnx_refuses_force_without_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-onnx", "--force"]) == 2
    assert "--repository" in capsys.readouterr().err


def test_export_onnx_refuses_a_version_that_is_not_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_VERSION", "latest")
    assert main(["export-onnx", "--repository", str(tmp_path)]) == 2
    assert "'latest'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- profile --------------------------------------------------------------------------
@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A repository holding the built-in model as version 1."""
    repository = tmp_path / "models"
    assert main(["export-onnx", "--repository", str(repository)]) == 0
    return repository


def _photos(directory: Path, count: int) -> Path:
    from tests.photo_variants import variants, write_set

    write_set(directory, variants(count, seed=21), seed=22)
    return directory


def test_profile_writes_the_reference_beside_the_version_and_lists_what_it_skipped(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference_gateway.inference.quality import REFERENCE_FILE, load_reference

    images = _photos(tmp_path / "images", 24)
    (images / "notes.txt").write_text("not an image")
    args = ["profile", "efficientnet-lite0", "--images", str(images)]
    assert main([*args, "--repository", str(exported), "--version", "1"]) == 0
    captured = capsys.readouterr()
    version = exported / "efficientnet-lite0" / "1"
    assert f"{version / REFERENCE_FILE}: 24 images" in captured.out
    assert "profile: 25/25 files" in captured.err  # progress, the skipped file counted
    assert "skipped" in captured.err and "notes.txt" in captured.err
    assert "can never fire" in captured.err  # 24 images are too few for any alert
    reference = load_reference(version, version / "model.onnx")
    assert reference is not None and reference.images == 24


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--version", "7"], 2, "has no version 7"),
        (["--images", "missing-dir"], 2, "is not a directory"),
    ],
)
def test_profile_says_what_is_wrong(
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    status: int,
    message: str,
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    args = ["profile", "efficientnet-lite0", "--repository", str(exported), "--images", str(images)]
    if extra[0] == "--images":
        args[-1] = str(tmp_path / extra[1])
    else:
        args += extra
    assert main(args) == status
    assert message in capsys.readouterr().err


def test_profile_needs_a_repository_a_known_model_and_enough_images(
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MODEL_REPOSITORY", raising=False)
    images = _photos(tmp_path / "few", 3)
    assert main(["profile", "efficientnet-lite0", "--images", str(images)]) == 2
    assert "set MODEL_REPOSITORY or pass --repository" in capsys.readouterr().err
    base = ["--images", str(images), "--repository", str(exported)]
    assert main(["profile", "nope", *base]) == 2
    assert "nope: no such model" in capsys.readouterr().err
    assert main(["profile", "efficientnet-lite0", *base]) == 1
    assert "3 usable images; a reference needs at least 20" in capsys.readouterr().err
    assert not (exported / "efficientnet-lite0" / "1" / "reference.json").exists()
