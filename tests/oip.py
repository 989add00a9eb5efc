"""Helpers for tests of the Open Inference Protocol, over HTTP and gRPC alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.servers import GatewayProcess


def predict_top1(gateway: GatewayProcess, data: bytes) -> int:
    """The top-1 class id ``POST /predict`` answers for ``data``: the reference answer."""
    answer = httpx.post(
        f"{gateway.url}/predict", content=data, headers={"content-type": "application/octet-stream"}
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["predictions"][0]["class_id"])


def classes(result: Any, name: str = "logits") -> list[list[tuple[float, int, str]]]:
    """The classification extension's answer in a tritonclient result (HTTP or gRPC):
    per image, (score, class id, label)."""
    rows = result.as_numpy(name)
    assert rows is not None
    parsed = []
    for row in np.atleast_2d(rows):
        entries = []
        for entry in row:
            score, index, label = entry.decode().split(":", 2)
            entries.append((float(score), int(index), label))
        parsed.append(entries)
    return parsed


def grpc_images(*photos: bytes) -> grpcclient.InferInput:
    """Encoded images as one BYTES input of ``tritonclient.grpc``, shape ``[N]``."""
    images = grpcclient.InferInput("input", [len(photos)], "BYTES")
    images.set_data_from_numpy(np.array(photos, dtype=np.object_))
    return images


def refusal(call: Callable[[], object]) -> InferenceServerException:
    """The error a call raises, as the client surfaces it."""
    with pytest.raises(InferenceServerException) as refused:
        call()
    return refused.value
