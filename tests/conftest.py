"""Shared fixtures: apps with the real model or with a controllable backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from tests.helpers import (
    ControlledBackend,
    controlled_loader,
    make_settings,
    ready_client,
    real_app,
)


@pytest.fixture(scope="session", autouse=True)
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ONNX cache for the session: the export runs as on a new machine.

    Set in the environment so settings and the server processes tests start see it.
    """
    directory = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("MODEL_CACHE_DIR")
    os.environ["MODEL_CACHE_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("MODEL_CACHE_DIR", None)
    else:
        os.environ["MODEL_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def real_app_client(model_cache_dir: Path) -> Iterator[TestClient]:
    """One app with the real model on the default backend (exported to
    ``model_cache_dir``), shared by tests that do not change its state."""
    with TestClient(real_app()) as client:
        yield ready_client(client)


@pytest.fixture
def controlled_backend() -> ControlledBackend:
    """A fresh unblocked controllable backend."""
    return ControlledBackend()


@pytest.fixture
def fake_client(controlled_backend: ControlledBackend) -> Iterator[TestClient]:
    """An app over the controllable backend (no real model)."""
    app = create_app(
        make_settings(), model_loader=controlled_loader(controlled_backend), configure_logging=False
    )
    with TestClient(app) as client:
        yield ready_client(client)


@pytest.fixture(scope="session")
def quantized_repository(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Path:
    """A repository holding the built-in model (version 1, FP32) and the INT8 version 2
    that ``inference-gateway quantize`` made of it from variants of scikit-image's
    photographs (24 to calibrate, 72 held out), both served (``versions: {all: true}``)."""
    from tests.quantized import quantized_repository as build

    return build(tmp_path_factory.mktemp("quantized"), model_cache_dir)
