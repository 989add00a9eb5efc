"""`bench.library_split`: the clocks a server keeps of where each request's time goes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.library_split import CLOCKS, parts

ROOT = Path(__file__).resolve().parents[2]
# A server's app as `bench.library_server --split` builds it, called as a server calls
# it; the clocks read at the end, as the bench reads them after a turn, and once more.
SCRIPT = """
import json
from starlette.testclient import TestClient
from bench import library_app
from bench.library_split import PATH
with TestClient(library_app.app) as client:
    client.get(PATH)  # the clocks reset, as before a turn
    for _ in range(5):
        assert client.get("/items/7").status_code == 200
    clocks = client.get(PATH).json()
    again = client.get(PATH).json()
print(json.dumps({"clocks": clocks, "again": again}))
"""
#: The bench's extras (not installed by `make test`) that two variants need.
NEEDS = {"instrumentator": "prometheus_fastapi_instrumentator",
         "opentelemetry": "opentelemetry.instrumentation.fastapi"}  # fmt: skip


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (opentelemetry's is not)
        return False


def _clocks(variant: str) -> dict[str, dict[str, int]]:
    module = NEEDS.get(variant)
    if module is not None and not _installed(module):
        pytest.skip(f"{module} is a bench extra")
    env = {**os.environ, "LIBRARY_VARIANT": variant, "LIBRARY_SPLIT": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, dict[str, int]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("variant", ["golden-signals", "instrumentator", "opentelemetry"])
def test_each_instrumentations_layer_and_the_app_inside_it_are_timed_once_a_request(
    variant: str,
) -> None:
    result = _clocks(variant)
    calls = {clock: result["clocks"][f"{clock}_calls"] for clock in CLOCKS}
    # Five requests (the clocks' own reads not among them), each entering the
    # instrumentation's layer once and the app inside it once, and each answer's two
    # messages passing every send: the app's, the layer's, and uvicorn's.
    assert calls == {"whole": 5, "server_send": 10, "layer": 5, "given_send": 10,
                     "inner": 5, "wrapped_send": 10}  # fmt: skip
    # A read resets the clocks: the next turn counts its own requests alone.
    assert result["again"] == dict.fromkeys(result["clocks"], 0)


def test_a_bare_app_has_no_layer_and_no_own_time() -> None:
    clocks = _clocks("bare")["clocks"]
    assert (clocks["whole_calls"], clocks["server_send_calls"]) == (5, 10)
    assert clocks["layer_calls"] == clocks["inner_calls"] == 0
    assert parts(clocks)["own_us"] == 0


def test_own_time_is_the_layer_less_the_app_inside_and_less_the_sends_it_passes_on() -> None:
    totals = {
        "whole": 100_000, "whole_calls": 2, "server_send": 20_000, "server_send_calls": 4,
        "layer": 80_000, "layer_calls": 2, "given_send": 24_000, "given_send_calls": 4,
        "inner": 50_000, "inner_calls": 2, "wrapped_send": 30_000, "wrapped_send_calls": 4,
    }  # fmt: skip
    # Own: 80 − 50 + 30 − 24 = 36 µs in all, 18 a request; the app and framework are
    # what is left of the whole once own and uvicorn's send are out: 100 − 36 − 20.
    assert parts(totals) == {
        "own_us": 18.0, "app_us": 22.0, "send_us": 10.0, "whole_us": 50.0, "requests": 2.0,
    }  # fmt: skip
