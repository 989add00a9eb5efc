"""The gateway over a backend a test steers from outside the process, through files.

``inference-gateway serve --app tests.gated_app:app`` serves the real app (settings,
HTTP stack, batcher, telemetry) with `GatedBackend` in place of the model, so tests of a
real server process can block the forward pass, slow it down, make it fail on chosen
inputs, or make it leak, deterministically. ``GATE_DIR`` names the control directory:

- ``closed``: while this file exists, every forward pass waits (the model "hangs");
- ``delay_ms``: a fixed cost per forward pass, in milliseconds;
- ``calls``: the backend appends one line per forward pass with its batch size;
- ``GATE_LEAK=1`` in the environment: the backend keeps every input (a memory leak);
- ``hold_load``: while this file exists, only the first worker to start finishes
  loading; the others wait (a server whose workers become ready at different times).

An input of one flat colour (a blank image) makes the pass raise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference_gateway.app import create_app
from inference_gateway.config import load_settings
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import LoadedModel, ModelSpec

#: The longest a forward pass waits for a closed gate before failing.
MAX_HOLD_SECONDS = 120.0


class GatedBackend:
    """A backend steered through the files of ``gate_dir`` (see the module docstring)."""

    name = "gated"

    def __init__(self, gate_dir: Path, *, leak: bool = False) -> None:
        self.gate_dir = gate_dir
        self.leak = leak
        self.kept: list[npt.NDArray[np.float32]] = []

    @property
    def memory_bytes(self) -> int:
        return 0

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with (self.gate_dir / "calls").open("a") as calls:
            calls.write(f"{batch.shape[0]}\n")
        give_up = time.monotonic() + MAX_HOLD_SECONDS
        while (self.gate_dir / "closed").exists():
            if time.monotonic() > give_up:
                raise RuntimeError("the gate stayed closed")
            time.sleep(0.005)
        delay = self.gate_dir / "delay_ms"
        if delay.exists():
            time.sleep(float(delay.read_text()) / 1000)
        if self.leak:
            self.kept.append(batch.copy())
        channels = batch.reshape(batch.shape[0], batch.shape[1], -1)
        flat = (channels.max(axis=2) == channels.min(axis=2)).all(axis=1)
        warmup = (channels == 0).all(axis=(1, 2))  # the server's warm-up pass is all zeros
        if bool((flat & ~warmup).any()):
            raise RuntimeError("poisoned input: a blank image")
        logits = np.zeros((batch.shape[0], 1000), dtype=np.float32)
        logits[:, 281] = 5.0  # tabby cat
        return logits

    def close(self) -> None:
        """Nothing to release."""


def _hold_all_but_the_first_worker(gate_dir: Path) -> None:
    if not (gate_dir / "hold_load").exists():
        return
    try:
        (gate_dir / "first_worker").touch(exist_ok=False)  # atomic: one worker wins
    except FileExistsError:
        give_up = time.monotonic() + MAX_HOLD_SECONDS
        while (gate_dir / "hold_load").exists() and time.monotonic() < give_up:
            time.sleep(0.01)


def _load() -> LoadedModel:
    _hold_all_but_the_first_worker(Path(os.environ["GATE_DIR"]))
    backend = GatedBackend(Path(os.environ["GATE_DIR"]), leak=os.environ.get("GATE_LEAK") == "1")
    spec = ModelSpec(name="efficientnet-lite0", version="1", labels=imagenet_labels())
    return LoadedModel(spec=spec, backend=backend)


app = create_app(load_settings(), model_loader=_load)
