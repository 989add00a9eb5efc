"""The gateway loading the built-in model as it did before model repositories.

    inference-gateway serve --app bench.cache_loader_app:app

The ONNX export is opened straight from ``MODEL_CACHE_DIR`` (graph and external
weights, `load_configured_model`) instead of being installed into a repository and
loaded through `load_builtin`: the baseline the repository path is measured against.
"""

from __future__ import annotations

from functools import partial

from inference_gateway.app import create_app
from inference_gateway.config import load_settings
from inference_gateway.inference.model import load_configured_model

settings = load_settings()
app = create_app(settings, model_loader=partial(load_configured_model, settings))
