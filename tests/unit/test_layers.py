"""The gateway's layers: its observability code imports nothing of its API layer (the
gateway's hooks into the library live in ``api/access.py``), and nothing of what the
library now holds is written twice here."""

from __future__ import annotations

import ast
from pathlib import Path

import inference_gateway

PACKAGE = Path(inference_gateway.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_observability_code_imports_nothing_of_api() -> None:
    files = sorted((PACKAGE / "observability").glob("*.py"))
    assert len(files) >= 3
    for path in files:
        assert not {n for n in _imports(path) if n.startswith("inference_gateway.api")}, path


def test_the_gateway_reaches_the_library_through_its_public_modules_only() -> None:
    for path in PACKAGE.rglob("*.py"):
        for name in _imports(path):
            if name.startswith("golden_signals"):
                assert not any(part.startswith("_") for part in name.split(".")), (path, name)
