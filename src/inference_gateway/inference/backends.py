"""Backends: a float32 NCHW batch in, logits out. The rest of the gateway sees only this."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch


@runtime_checkable
class Backend(Protocol):
    """Runs one forward pass over a batch.

    ``predict`` is called from one worker thread at a time; it must not be called on
    the event loop.
    """

    name: str

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return ``(N, num_classes)`` logits for an ``(N, 3, H, W)`` batch."""
        ...

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the model's parameters and buffers."""
        ...

    def close(self) -> None:
        """Release what the backend holds."""
        ...


class TorchBackend:
    """Eager PyTorch: the reference backend."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, device: str = "cpu", threads: int = 0) -> None:
        """Take ownership of ``module``, move it to ``device`` and set the intra-op threads.

        ``threads`` of 0 leaves torch's default (one per core). Torch's thread count is
        process-wide: one backend per process.
        """
        if threads > 0:
            torch.set_num_threads(threads)
        self._device = torch.device(device)
        self._module = module.to(self._device).eval()
        self._memory_bytes = sum(
            t.numel() * t.element_size()
            for t in (*self._module.parameters(), *self._module.buffers())
        )

    @property
    def memory_bytes(self) -> int:
        """Bytes of parameters and buffers, known once the model is loaded."""
        return self._memory_bytes

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One forward pass under ``torch.inference_mode()``."""
        with torch.inference_mode():
            inputs = torch.from_numpy(batch).to(self._device)
            logits = self._module(inputs)
            result: npt.NDArray[np.float32] = logits.float().cpu().numpy()
            return result

    def close(self) -> None:
        """Drop the module so its memory can be reclaimed."""
        del self._module
