"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gate import Gate
from tests.servers import GatewayProcess, free_port, gateway_process


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    """The control directory of a module's `tests.gated_app` server (tests/gate.py)."""
    return Gate(tmp_path_factory.mktemp("gate"))


@pytest.fixture(scope="module")
def grpc_port() -> int:
    """A free port for the gateway's gRPC service (one per test module)."""
    return free_port()


@pytest.fixture(scope="module")
def grpc_gateway(grpc_port: int) -> Iterator[GatewayProcess]:
    """A real ``inference-gateway serve`` with the built-in model and ``GRPC_PORT``."""
    with gateway_process({"GRPC_PORT": str(grpc_port), "WORKERS": "1"}) as process:
        yield process
