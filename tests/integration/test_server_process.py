"""The real server process, started the way `make run` starts it."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from tests.images import CAT_CLASSES, cat_jpeg
from tests.servers import gateway_process

pytestmark = pytest.mark.integration


def test_served_model_classifies_a_cat_upload_and_stops_cleanly() -> None:
    with gateway_process() as gateway:
        assert httpx.get(f"{gateway.url}/ready").status_code == 200
        assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
        response = httpx.post(
            f"{gateway.url}/predict",
            files={"file": ("cat.jpg", cat_jpeg(), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 200
        assert CAT_CLASSES & {p["class_id"] for p in response.json()["predictions"]}
        assert (
            httpx.get(f"{gateway.url}/nope").headers["content-type"] == "application/problem+json"
        )
        assert gateway.stop() == 0
    lines = [line for line in gateway.log_lines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert any(r["message"] == "Model ready" for r in records)
    # A prediction's one line is the spec's "Inference completed", with the answer on it.
    access = [r for r in records if r.get("endpoint") == "/predict" and r["level"] != "DEBUG"]
    assert [r["message"] for r in access] == ["Inference completed"]
    assert access[0]["status_code"] == 200
    assert access[0]["prediction_class"]
