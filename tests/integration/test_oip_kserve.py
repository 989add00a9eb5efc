"""The Open Inference Protocol with KServe's own Python client, unchanged.

`kserve.InferenceRESTClient` (protocol v2) against a real ``inference-gateway serve``:
health, model readiness, and inference with a preprocessed FP32 tensor and with
encoded images, the way a KServe user's code calls a v2 server. The client runs in a
process of its own (tests/kserve_probe.py says why).
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2 as httpx
import pytest

from tests.images import CAT_CLASSES, CAT_PNG, ESPRESSO
from tests.servers import REPO_ROOT, gateway_process

pytestmark = pytest.mark.integration


def test_kserves_rest_client_works_unchanged() -> None:
    with gateway_process({"WORKERS": "1"}) as gateway:
        probe = subprocess.run(
            [sys.executable, "-m", "tests.kserve_probe", gateway.url],
            capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=120,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-2000:]
        seen = json.loads(probe.stdout)
        expected = httpx.post(
            f"{gateway.url}/predict", content=CAT_PNG.read_bytes(),
            headers={"content-type": "image/png"},
        ).json()["predictions"][0]["class_id"]  # fmt: skip
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["tensor"] == {"id": "k-tensor", "shape": [1, 1000], "top1": [expected]}
    assert seen["images"]["id"] == "k-images" and seen["images"]["shape"] == [2, 1000]
    cat, coffee = seen["images"]["top1"]
    assert cat in CAT_CLASSES and cat == expected and coffee == ESPRESSO
