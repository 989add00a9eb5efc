"""Backends on the real model: ONNX Runtime agrees with torch; batching changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference_gateway.cli import main
from inference_gateway.inference.backends import OnnxRuntimeBackend, TorchBackend
from inference_gateway.inference.model import load_model
from inference_gateway.inference.onnx_export import onnx_path
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_PNG, COFFEE_PNG, ROCKET_JPG, SKIMAGE_DATA

PHOTOS = [
    CAT_PNG,
    COFFEE_PNG,
    ROCKET_JPG,
    SKIMAGE_DATA / "astronaut.png",
    SKIMAGE_DATA / "motorcycle_left.png",
]
#: Largest logit difference accepted between backends (float32 kernels differ).
LOGIT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.stack(
        [prepare_image(p.read_bytes(), ImageLimits(), PreprocessConfig()).tensor for p in PHOTOS]
    )


@pytest.fixture(scope="module")
def torch_model():  # type: ignore[no-untyped-def]
    return load_model("efficientnet-lite0", "1", "torch")


@pytest.fixture(scope="module")
def onnx_model(model_cache_dir: Path):  # type: ignore[no-untyped-def]
    return load_model("efficientnet-lite0", "1", "onnxruntime", cache_dir=model_cache_dir)


def test_onnxruntime_and_torch_agree_on_real_photos(torch_model, onnx_model, batch) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(onnx_model.backend, OnnxRuntimeBackend)
    assert isinstance(torch_model.backend, TorchBackend)
    reference = torch_model.backend.predict(batch)
    candidate = onnx_model.backend.predict(batch)
    assert candidate.shape == reference.shape == (len(PHOTOS), 1000)
    assert (candidate.argmax(axis=1) == reference.argmax(axis=1)).all()
    assert np.abs(candidate - reference).max() < LOGIT_TOLERANCE
    assert reference[1].argmax() == 967  # the espresso, for good measure


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_batch_of_one_and_of_many_give_the_same_logits(
    torch_model, onnx_model, batch, backend_name: str
) -> None:  # type: ignore[no-untyped-def]
    backend = (torch_model if backend_name == "torch" else onnx_model).backend
    together = backend.predict(batch)
    alone = np.concatenate([backend.predict(batch[i : i + 1]) for i in range(len(batch))])
    assert np.abs(together - alone).max() < 1e-4


def test_onnx_export_is_cached_by_name_version_and_exporter(
    model_cache_dir: Path, onnx_model
) -> None:  # type: ignore[no-untyped-def]
    path = onnx_path(model_cache_dir, "efficientnet-lite0", "1")
    assert path.exists()
    assert Path(str(path) + ".data").exists() or any(model_cache_dir.glob("*.data"))
    assert "efficientnet-lite0-v1-torch" in path.name and "opset" in path.name
    assert onnx_path(model_cache_dir, "efficientnet-lite0", "2") != path
    before = path.stat().st_mtime_ns
    load_model("efficientnet-lite0", "1", "onnxruntime", cache_dir=model_cache_dir)
    assert path.stat().st_mtime_ns == before  # reused, not exported again
    assert onnx_model.memory_bytes > 4_000_000 * 4  # ~4.7 M float32 parameters


def test_serving_a_cached_onnx_model_never_imports_torch(model_cache_dir: Path, onnx_model) -> None:  # type: ignore[no-untyped-def]
    # torch costs ~300 MB of memory and ~2 s of start-up per worker; with one worker
    # per core that is paid once per core for nothing when ONNX Runtime serves.
    probe = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from inference_gateway.app import create_app\n"
        "from inference_gateway.config import Settings\n"
        "with TestClient(create_app(Settings(_env_file=None, model_backend='onnxruntime'))) as c:\n"
        "    while c.get('/ready').status_code != 200: pass\n"
        "    assert c.post('/predict', files={'file': open(sys.argv[1], 'rb')}).status_code == 200\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    env = {"MODEL_CACHE_DIR": str(model_cache_dir), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(ROCKET_JPG)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_onnx_file_name_carries_torch_version_even_without_package_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    import torch

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    with_metadata = onnx_path(tmp_path, "efficientnet-lite0", "1")
    monkeypatch.setattr(importlib.metadata, "version", missing)
    without = onnx_path(tmp_path, "efficientnet-lite0", "1")
    assert without == with_metadata
    assert f"-torch{torch.__version__}-" in without.name


def test_export_onnx_command_exports_ahead_of_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path))
    assert main(["export-onnx"]) == 0
    assert "exported" in capsys.readouterr().out
    assert main(["export-onnx"]) == 0
    assert "already there" in capsys.readouterr().out
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_unknown_models_and_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_model("resnet-9000", "1", "torch")
    with pytest.raises(ValueError, match="unknown backend"):
        load_model("efficientnet-lite0", "1", "tensorrt")
    with pytest.raises(ValueError, match="CPU"):
        load_model("efficientnet-lite0", "1", "onnxruntime", device="cuda")
