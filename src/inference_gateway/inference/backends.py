"""Backends: a float32 NCHW batch in, logits out. The rest of the gateway sees only this."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # torch is imported only by the backend that runs it (~300 MB per process)
    import onnxruntime as ort
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


class PassSignal(Protocol):
    """Tells a backend whether its forward pass is the only one running on the machine.

    `inference.workers.PassBoardSlot` is the one shared by a server's worker processes.
    """

    def begin(self) -> bool:
        """Mark a pass of this backend running; True when no other pass runs now."""
        ...

    def end(self) -> None:
        """Mark the pass finished (called also when it raised)."""
        ...

    def close(self) -> None:
        """Give up the signal: this backend runs no more passes."""
        ...


@dataclass(frozen=True, slots=True)
class WideWhenIdle:
    """Run a forward pass on ``threads`` intra-op threads when no other pass runs.

    ``passes`` opens the backend's own `PassSignal` (one per backend: a worker serving
    several models runs one batcher thread, so one pass at a time, per model); when it
    raises `OSError` (no slot free on the board) the backend keeps to one session.
    """

    threads: int
    passes: Callable[[], PassSignal]


@functools.cache
def _register_shared_arena() -> None:
    """Give ONNX Runtime's environment one CPU arena for this process (once).

    Sessions that opt in (``session.use_env_allocators``) take their scratch memory
    from it instead of an arena each: a backend's two sessions run one pass at a time,
    so the second costs about 30-40 MB for EfficientNet-Lite0 (mostly its copy of the
    weights) instead of about 70 MB.
    """
    import onnxruntime as ort

    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # the defaults


def _session(model_path: Path, threads: int, shared_arena: bool = False) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if shared_arena:
        _register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its own log lines are not JSON
    # Idle intra-op threads sleep instead of spinning: the cores are shared with
    # image decoding and the event loop, which spinning would starve (a spinning pool
    # kept a core busy for about 35 ms after each pass, 1.32.0 on 2 vCPUs).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU: the fast backend (about 3-4x torch eager on 2 cores)."""

    name = "onnxruntime"

    def __init__(
        self, model_path: Path, threads: int = 0, wide: WideWhenIdle | None = None
    ) -> None:
        """Open an inference session on ``model_path`` with ``threads`` intra-op threads.

        ``threads`` of 0 uses one per core. Inter-op parallelism is off: the gateway
        runs one forward pass at a time and gives the cores to it. With ``wide`` (and
        more threads there than ``threads``) a second session on the same file runs the
        passes that find no other pass running on the machine (`WideWhenIdle`): ONNX
        Runtime fixes a session's thread count when it opens the session.
        """
        threads = threads or (os.cpu_count() or 1)
        two = wide is not None and wide.threads > threads
        self._session = _session(model_path, threads, shared_arena=two)
        self._wide: ort.InferenceSession | None = None
        self._wide_threads: int | None = None
        self._passes: PassSignal | None = None
        #: Passes run on the wide session since the backend was opened.
        self.wide_passes = 0
        self._cold = False
        if wide is not None and two:
            with contextlib.suppress(OSError):  # no slot free on the board: one session
                self._passes = wide.passes()
        if wide is not None and self._passes is not None:
            try:
                self._wide = _session(model_path, wide.threads, shared_arena=True)
            except BaseException:
                self.close()
                raise
            self._wide_threads = wide.threads
            self._cold = True  # the first pass runs both sessions
        self._input = self._session.get_inputs()[0].name
        self._outputs: list[str] | None = None  # None: every output (the first is used)
        self._memory_bytes = sum(
            p.stat().st_size for p in model_path.parent.glob(model_path.name + "*")
        )

    @property
    def memory_bytes(self) -> int:
        """Bytes of the model files the session loaded (the graph and its external
        weights): the weights' size, not the session's resident memory. Counted once
        when a wide session holds a second copy (about 30 MB more resident per worker
        for EfficientNet-Lite0, shown by ``process_resident_memory_bytes``)."""
        return self._memory_bytes

    @property
    def wide_threads(self) -> int | None:
        """The intra-op threads of the session for passes alone on the machine; None
        when there is no such session (every pass runs on ``threads``)."""
        return self._wide_threads

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

        With a wide session, the pass runs there when the pass signal says it is alone
        on the machine, else on ``threads``; the signal is told when the pass ends,
        also when it raises. The scores come back as the graph made them (a model
        answering in integers is caught by the batcher's checks, not silently
        converted).
        """
        if self._passes is None or self._wide is None:
            return self._run(self._session, batch)
        alone = self._passes.begin()
        try:
            if self._cold:  # the host's warm-up: neither session's first run is a request's
                self._cold = False
                self._run(self._wide, batch)
                return self._run(self._session, batch)
            if alone:
                self.wide_passes += 1
                return self._run(self._wide, batch)
            return self._run(self._session, batch)
        finally:
            self._passes.end()

    def _run(
        self, session: ort.InferenceSession, batch: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        outputs = session.run(self._outputs, {self._input: batch})
        result: npt.NDArray[np.float32] = np.asarray(outputs[0])
        return result

    def close(self) -> None:
        """Release the sessions and the pass signal."""
        if self._passes is not None:
            self._passes.close()
            self._passes = None
        self._wide = None
        with contextlib.suppress(AttributeError):
            del self._session
