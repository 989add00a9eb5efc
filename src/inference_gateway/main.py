"""ASGI entry point: ``uvicorn inference_gateway.main:app``.

The one place that builds the default `Settings` from the environment.
"""

from __future__ import annotations

import sys

from inference_gateway.app import create_app
from inference_gateway.config import ConfigError, load_settings
from inference_gateway.inference.heap import freeze_after_loads

try:
    settings = load_settings()
except ConfigError as exc:  # pragma: no cover - exercised through the CLI tests
    sys.stderr.write(f"{exc}\n")
    raise SystemExit(2) from None

freeze_after_loads()  # this process serves: loaded models leave the collector's walks
app = create_app(settings)
