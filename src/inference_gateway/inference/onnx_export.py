"""Export a torch model to ONNX with a dynamic batch axis, cached on disk.

The file name carries the model name and version and the exporter's version (torch's
and the opset), so upgrading either produces a new file instead of loading a stale one.
Export takes seconds; `inference-gateway export-onnx` does it ahead of time (the
container image does it at build time).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the exporter needs torch; finding a cached file must not load it
    import torch

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: Loggers of the exporter stack that narrate every pass at INFO.
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")


def onnx_path(cache_dir: Path, name: str, version: str) -> Path:
    """Where the ONNX file of ``name`` ``version`` lives for this torch and opset."""
    return cache_dir / f"{name}-v{version}-torch{_torch_version()}-opset{OPSET}.onnx"


def _torch_version() -> str:
    """torch's version from its package metadata (the same as ``torch.__version__``)
    without importing it, which costs ~300 MB and ~2 s; imported only when torch
    is present without metadata (a source checkout on ``sys.path``)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        return str(torch.__version__)


@contextmanager
def _quiet() -> Iterator[None]:
    saved = {n: logging.getLogger(n).level for n in _CHATTY_LOGGERS}
    for logger_name in _CHATTY_LOGGERS:
        logging.getLogger(logger_name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not ours to fix
            yield
    finally:
        for logger_name, level in saved.items():
            logging.getLogger(logger_name).setLevel(level)


def export_onnx(module: torch.nn.Module, target: Path, image_size: int = 224) -> Path:
    """Export ``module`` to ``target`` (plus ``target.data`` with the weights).

    Written into a temporary directory and moved into place weights first, graph
    last, so a reader that finds the graph finds a complete model.
    """
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / target.name
        with _quiet():
            torch.onnx.export(
                module.eval(),
                (example,),
                str(staged),
                dynamo=True,
                verbose=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"inputs": {0: batch}},
            )
        for part in sorted(Path(tmp).iterdir(), key=lambda p: p.suffix == ".onnx"):
            shutil.move(str(part), target.parent / part.name)
    return target


def ensure_onnx(module_factory: Callable[[], torch.nn.Module], target: Path) -> Path:
    """Return ``target``, exporting the module from ``module_factory()`` if it is missing."""
    if target.exists():
        return target
    return export_onnx(module_factory(), target)
