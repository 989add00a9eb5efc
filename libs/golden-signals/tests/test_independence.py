"""The library stands alone: none of the gateway's code, none of its inference
dependencies (torch, onnxruntime, numpy, Pillow), installed or imported."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "golden_signals"
HEAVY = {"torch", "onnxruntime", "numpy", "pillow", "pil"}


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_imports_nothing_of_the_gateway() -> None:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        for name in _imported(path):
            top = name.split(".")[0]
            assert top != "inference_gateway", (path, name)
            assert top.lower() not in HEAVY, (path, name)


def _requirement_name(requirement: str) -> str | None:
    """The distribution a requirement names, None when it only applies with an extra."""
    if "extra ==" in requirement:
        return None
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return match.group(0).lower().replace("_", "-") if match else None


def test_installing_the_library_pulls_in_none_of_the_inference_stack() -> None:
    """What pip installs with ``pip install libs/golden-signals``: the closure of its
    requirements, read from the installed distributions' metadata."""
    seen: set[str] = set()
    pending = ["golden-signals"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or ():
            dependency = _requirement_name(requirement)
            if dependency is not None:
                pending.append(dependency)
    assert {"prometheus-client", "structlog", "opentelemetry-sdk"} <= seen
    assert not seen & {"torch", "onnxruntime", "numpy", "pillow", "inference-gateway"}


def test_serving_an_instrumented_app_imports_none_of_it() -> None:
    script = """
import sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
import golden_signals, golden_signals.cli, golden_signals.rules
async def hello(request):
    return PlainTextResponse("hi")
app = Starlette(routes=[Route("/hello", hello)])
golden_signals.instrument(app)
client = TestClient(app)
assert client.get("/hello").text == "hi"
assert client.get("/metrics").status_code == 200
print(",".join(sorted(sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    modules = {
        name.split(".")[0].lower() for name in result.stdout.strip().splitlines()[-1].split(",")
    }
    assert "golden_signals" in modules
    assert not modules & (HEAVY | {"inference_gateway"})
