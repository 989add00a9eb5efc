"""Backends: a float32 NCHW batch in, logits out. The rest of the gateway sees only this."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # torch is imported only by the backend that runs it (~300 MB per process)
    import torch


#: An ONNX graph input or output: (name, shape with ints or symbolic names, type).
GraphTensor = tuple[str, tuple[int | str | None, ...], str]


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
        """The model's size in bytes, as the backend measures it.

        Torch: its parameters and buffers. ONNX Runtime: its model files (the graph
        and the external weights next to it), not the session's resident memory.
        """
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
        import torch

        self._torch = torch
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
        with self._torch.inference_mode():
            inputs = self._torch.from_numpy(batch).to(self._device)
            logits = self._module(inputs)
            result: npt.NDArray[np.float32] = logits.float().cpu().numpy()
            return result

    def close(self) -> None:
        """Drop the module so its memory can be reclaimed."""
        del self._module


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU: the fast backend (about 3-4x torch eager on 2 cores)."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int = 0) -> None:
        """Open an inference session on ``model_path`` with ``threads`` intra-op threads.

        ``threads`` of 0 uses one per core. Inter-op parallelism is off: the gateway
        runs one forward pass at a time and gives the cores to it.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its own log lines are not JSON
        # Idle intra-op threads sleep instead of spinning: the cores are shared with
        # image decoding and the event loop, which spinning would starve.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._outputs: list[str] | None = None  # None: every output (the first is used)
        self._memory_bytes = sum(
            p.stat().st_size for p in model_path.parent.glob(model_path.name + "*")
        )

    @property
    def memory_bytes(self) -> int:
        """Bytes of the model files the session loaded (the graph and its external
        weights): the weights' size, not the session's resident memory."""
        return self._memory_bytes

    @property
    def inputs(self) -> list[GraphTensor]:
        """The graph's inputs: name, shape (ints, or names of symbolic dims), type."""
        return [(i.name, tuple(i.shape), i.type) for i in self._session.get_inputs()]

    @property
    def outputs(self) -> list[GraphTensor]:
        """The graph's outputs, described as `inputs` are."""
        return [(o.name, tuple(o.shape), o.type) for o in self._session.get_outputs()]

    def select(self, input_name: str, output_name: str) -> None:
        """Feed ``input_name`` and fetch only ``output_name`` from now on."""
        self._input = input_name
        self._outputs = [output_name]

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One forward pass; the session is used from one thread at a time.

        The scores come back as the graph made them (a model answering in integers is
        caught by the batcher's checks, not silently converted).
        """
        outputs = self._session.run(self._outputs, {self._input: batch})
        result: npt.NDArray[np.float32] = np.asarray(outputs[0])
        return result

    def close(self) -> None:
        """Release the session."""
        del self._session
