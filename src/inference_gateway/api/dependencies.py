"""FastAPI dependencies: how routes reach the objects `create_app` built.

Routes never import globals; they declare what they need and get the app's own
instances from ``app.state``. They are ``async`` on purpose: FastAPI runs plain
``def`` dependencies in a thread pool, a thread hop per request for a dict lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inference_gateway.config import Settings
from inference_gateway.inference.host import ModelHost
from inference_gateway.observability.telemetry import Telemetry


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_host(request: Request) -> ModelHost:
    """The app's model host (loading, readiness, classification)."""
    host: ModelHost = request.app.state.host
    return host


async def get_telemetry(request: Request) -> Telemetry:
    """The app's metrics, tracer and logger."""
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


SettingsDep = Annotated[Settings, Depends(get_settings)]
HostDep = Annotated[ModelHost, Depends(get_host)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
