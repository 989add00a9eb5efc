"""The gateway serving an instant model: what remains is the gateway's own work.

    inference-gateway serve --app bench.instant_app:app

Settings come from the environment as for the real app; the backend returns fixed
logits at once (`bench.telemetry_overhead.InstantBackend`), so a load test measures
HTTP, multipart, decoding, hand-offs and telemetry without the forward pass.
"""

from __future__ import annotations

from bench.telemetry_overhead import _loader
from inference_gateway.app import create_app
from inference_gateway.config import load_settings

app = create_app(load_settings(), model_loader=_loader)
