"""FastAPI dependencies: how routes reach the objects `create_app` built.

Routes never import globals; they declare what they need and get the app's own
instances from ``app.state``. They are ``async`` on purpose: FastAPI runs plain
``def`` dependencies in a thread pool, a thread hop per request for a dict lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inference_gateway.config import Settings
from inference_gateway.inference.control import ModelControl
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.telemetry import Telemetry


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    """The app's model registry (every model version: routing, readiness, loading)."""
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_control(request: Request) -> ModelControl:
    """The app's model control (the catalog, polling, explicit load and unload)."""
    control: ModelControl = request.app.state.control
    return control


async def get_telemetry(request: Request) -> Telemetry:
    """The app's metrics, tracer and logger."""
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ControlDep = Annotated[ModelControl, Depends(get_control)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
