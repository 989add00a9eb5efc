"""The README documents every setting and every endpoint the code has."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from inference_gateway.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [
        name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in README
    ]
    assert missing == []


def test_every_route_is_in_the_readme(fake_client: TestClient) -> None:
    paths = {getattr(r, "path", "") for r in fake_client.app.routes}  # type: ignore[attr-defined]
    spec_paths = set(fake_client.get("/openapi.json").json()["paths"]) | {"/metrics", "/docs"}
    for path in spec_paths | (paths & {"/metrics"}):
        assert f"`GET {path}`" in README or f"`POST {path}`" in README, path
