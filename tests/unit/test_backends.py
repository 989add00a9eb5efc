"""Backends on the real model: ONNX Runtime agrees with torch; batching changes nothing;
a pass alone on the machine runs on every core."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from inference_gateway import config
from inference_gateway.cli import main
from inference_gateway.inference import catalog
from inference_gateway.inference.backends import OnnxRuntimeBackend, TorchBackend, WideWhenIdle
from inference_gateway.inference.catalog import load_builtin, wide_when_idle
from inference_gateway.inference.model import load_model
from inference_gateway.inference.onnx_export import onnx_path
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from inference_gateway.inference.workers import PassBoardSlot
from tests.helpers import make_settings
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


# --- a pass alone on the machine runs on every core (WideWhenIdle)


class FakePasses:
    """A pass signal that answers what the test says and records what the backend did."""

    def __init__(self) -> None:
        self.alone = True
        self.running = False
        self.begun = self.ended = 0
        self.closed = False

    def begin(self) -> bool:
        assert not self.running
        self.running = True
        self.begun += 1
        return self.alone

    def end(self) -> None:
        self.running = False
        self.ended += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def onnx_file(model_cache_dir: Path, onnx_model) -> Path:  # type: ignore[no-untyped-def]
    return onnx_path(model_cache_dir, "efficientnet-lite0", "1")


def test_a_pass_alone_runs_wide_and_one_beside_another_runs_narrow(
    onnx_file: Path, batch: np.ndarray
) -> None:
    passes = FakePasses()
    backend = OnnxRuntimeBackend(onnx_file, threads=1, wide=WideWhenIdle(2, lambda: passes))
    assert backend.wide_threads == 2
    backend.predict(batch[:1])  # the warm-up runs both sessions
    assert backend.wide_passes == 0
    wide = backend.predict(batch)
    assert backend.wide_passes == 1
    passes.alone = False  # another worker's pass runs
    narrow = backend.predict(batch)
    assert backend.wide_passes == 1
    assert np.abs(wide - narrow).max() < 1e-4  # the same answers either way
    assert passes.begun == passes.ended == 3
    assert not passes.running
    backend.close()
    assert passes.closed


def test_a_failing_pass_is_taken_off_the_board(onnx_file: Path) -> None:
    passes = FakePasses()
    backend = OnnxRuntimeBackend(onnx_file, threads=1, wide=WideWhenIdle(2, lambda: passes))
    for alone in (True, False):
        passes.alone = alone
        with pytest.raises(Exception, match="Invalid rank"):  # ONNX Runtime's own type
            backend.predict(np.zeros((1, 3, 7), dtype=np.float32))
        assert not passes.running
    assert passes.begun == passes.ended == 2
    backend.close()


def test_without_more_cores_than_its_share_a_backend_opens_one_session(onnx_file: Path) -> None:
    passes = FakePasses()
    backend = OnnxRuntimeBackend(onnx_file, threads=2, wide=WideWhenIdle(2, lambda: passes))
    assert backend.wide_threads is None
    backend.predict(np.zeros((1, 3, 224, 224), dtype=np.float32))
    assert passes.begun == 0  # nothing to choose: the board is not touched
    backend.close()


def test_with_no_slot_free_on_the_board_a_backend_opens_one_session(onnx_file: Path) -> None:
    def board_full() -> FakePasses:
        raise OSError("all forward-pass slots are taken")

    backend = OnnxRuntimeBackend(onnx_file, threads=1, wide=WideWhenIdle(2, board_full))
    assert backend.wide_threads is None
    assert backend.predict(np.zeros((1, 3, 224, 224), dtype=np.float32)).shape == (1, 1000)
    backend.close()


def test_a_running_pass_is_on_the_shared_board_until_it_ends(
    onnx_file: Path, batch: np.ndarray, tmp_path: Path
) -> None:
    backend = OnnxRuntimeBackend(onnx_file, 1, WideWhenIdle(2, partial(PassBoardSlot, tmp_path)))
    backend.predict(batch[:1])
    observer = PassBoardSlot(tmp_path)  # another worker's view
    seen = threading.Event()

    def run_passes() -> None:
        while not seen.is_set():
            backend.predict(batch)

    worker = threading.Thread(target=run_passes)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while observer.others_running() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert observer.others_running() == 1
    finally:
        seen.set()
        worker.join(timeout=60)
    assert observer.others_running() == 0
    backend.close()
    observer.close()


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "usable_cores", lambda: 4)
    monkeypatch.setattr(catalog, "usable_cores", lambda: 4)


@pytest.mark.usefixtures("four_cores")
def test_the_wide_session_is_planned_only_where_workers_share_a_board(tmp_path: Path) -> None:
    board = {"worker_state_dir": str(tmp_path)}
    plan = wide_when_idle(make_settings(workers=2, **board))
    assert plan is not None
    assert plan.threads == 4
    slot = plan.passes()
    assert isinstance(slot, PassBoardSlot)
    slot.close()
    assert wide_when_idle(make_settings(workers=2)) is None  # no board: others unknown
    assert wide_when_idle(make_settings(workers=1, **board)) is None  # already every core
    assert wide_when_idle(make_settings(workers=2, model_threads=4, **board)) is None
    assert wide_when_idle(make_settings(workers=2, model_wide_when_idle=False, **board)) is None


@pytest.mark.usefixtures("four_cores")
def test_a_served_model_gets_the_wide_session_under_several_workers(tmp_path: Path) -> None:
    model = load_builtin(make_settings(workers=2, worker_state_dir=str(tmp_path)))
    backend = model.backend
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.wide_threads == 4
    backend.predict(np.zeros((1, *model.spec.preprocess.tensor_shape), dtype=np.float32))
    observer = PassBoardSlot(tmp_path)
    assert observer.index == 1  # the backend holds slot 0
    assert observer.others_running() == 0
    backend.close()
    observer.close()
