"""`bench.library_split`: the clocks a server keeps of where each request's time goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A server's app as `bench.library_server --split` builds it, called through Starlette
# as a server calls it; the clocks read at the end, as the bench reads them after a turn.
SCRIPT = """
import json, os
from starlette.testclient import TestClient
from bench import library_app
from bench.library_split import PATH
with TestClient(library_app.app) as client:
    client.get(PATH)  # the clocks reset, as before a turn
    for _ in range(5):
        assert client.get("/items/7").status_code == 200
    clocks = client.get(PATH).json()
    again = client.get(PATH).json()
print(json.dumps({"clocks": clocks, "again": again, "stack": type(library_app.app.middleware_stack).__name__}))
"""


def _clocks(variant: str) -> dict[str, object]:
    env = {**os.environ, "LIBRARY_VARIANT": variant, "LIBRARY_SPLIT": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# Ours wraps the stack FastAPI builds: the timed app is inside it, and our code between
# the outer clock and the inner one; bare, the stack is the timed app itself.
@pytest.mark.parametrize(
    ("variant", "outermost"), [("bare", "_Inner"), ("golden-signals", "_Outer")]
)
def test_a_split_server_times_each_part_of_its_requests(variant: str, outermost: str) -> None:
    result = _clocks(variant)
    assert result["stack"] == outermost
    clocks = result["clocks"]
    assert isinstance(clocks, dict)
    # Every request counted once; the scrape of the clocks themselves is not.
    assert clocks["requests"] == 5
    # The app inside the instrumentation ran inside the request; the answer's two
    # messages went through the server's send, inside the send the app was handed.
    assert 0 < clocks["inner"] < clocks["outer"]
    assert 0 < clocks["server_send"] <= clocks["wrapped_send"] < clocks["inner"]
    # A read resets them: the next turn counts its own requests alone.
    assert result["again"] == dict.fromkeys(clocks, 0)
