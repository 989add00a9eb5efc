"""The page for people (api/ui.py, ui/): served at ``/`` with its assets under ``/ui/``,
behind a strict Content-Security-Policy, self-contained, off with ``ENABLE_UI=false``.

The page's behaviour in a browser is tested in tests/integration/test_ui_browser.py.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference_gateway.api.keys import add_key, needs_key
from inference_gateway.api.ui import CONTENT_SECURITY_POLICY
from inference_gateway.inference.quality import CONTINUOUS
from tests.helpers import ControlledBackend, controlled_app, ready_client

ROOT = Path(__file__).resolve().parents[2]
UI_DIR = ROOT / "src" / "inference_gateway" / "ui"
ASSETS = {
    "/ui/app.js": "text/javascript",
    "/ui/style.css": "text/css",
    "/ui/icon.svg": "image/svg+xml",
}
#: The SLO's prediction traffic (deploy/prometheus/rules/slo-recording.yml).
PREDICTION_ENDPOINTS = re.compile(r"/predict|/models/.+/predict|/v2/models/.+/infer")


class PageParser(HTMLParser):
    """Every tag of the page with its attributes, and the text inside each script."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


@pytest.fixture
def client_with(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """An app over a controllable backend with the settings given by indirect params."""
    settings: dict[str, object] = getattr(request, "param", {})
    with TestClient(controlled_app(ControlledBackend(), **settings)) as client:
        yield ready_client(client)


def assert_page_headers(headers: object) -> None:
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY  # type: ignore[index]
    assert headers["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert headers["referrer-policy"] == "no-referrer"  # type: ignore[index]


# --- the page and its assets


def test_the_page_is_served_at_the_root_with_a_strict_policy(fake_client: TestClient) -> None:
    response = fake_client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_page_headers(response.headers)
    policy = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'self'"
    assert "script-src" not in policy  # scripts fall back to 'self': no inline, no eval
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert policy["frame-ancestors"] == "'none'"
    # The middleware's headers are there too.
    assert response.headers["x-request-id"]


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_assets(
    fake_client: TestClient,
) -> None:
    parsed = parse(fake_client.get("/").text)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/ui/app.js"}]
    assert "".join(parsed.script_text).strip() == ""
    assert all(tag != "style" for tag, _ in parsed.tags)
    for tag, attrs in parsed.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], tag
    loaded = {
        attrs.get("src") or attrs.get("href")
        for tag, attrs in parsed.tags
        if tag in ("script", "link", "img")
    }
    assert loaded == set(ASSETS)


@pytest.mark.parametrize(("path", "content_type"), sorted(ASSETS.items()))
def test_each_asset_is_served_with_the_page_headers(
    fake_client: TestClient, path: str, content_type: str
) -> None:
    response = fake_client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert_page_headers(response.headers)
    # Revalidated cheaply: an unchanged asset is a 304 without a body.
    again = fake_client.get(path, headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/missing.js", "/ui/", "/ui/../app.py"])
def test_nothing_else_is_served_under_ui(fake_client: TestClient, path: str) -> None:
    response = fake_client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_api_answers_do_not_carry_the_page_policy(fake_client: TestClient) -> None:
    assert "content-security-policy" not in fake_client.get("/models").headers


def test_the_page_is_not_in_the_openapi_schema(fake_client: TestClient) -> None:
    paths = fake_client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/ui")]


# --- settings


@pytest.mark.parametrize("client_with", [{"enable_ui": False}], indirect=True)
def test_the_page_is_off_with_enable_ui_false(client_with: TestClient) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css"):
        response = client_with.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    assert client_with.get("/models").status_code == 200


@pytest.mark.parametrize(
    "client_with",
    [{"trace_ui_url": 'http://jaeger:16686/trace/{trace_id}?a="b"&c=<x>', "top_k_default": 3}],
    indirect=True,
)
def test_the_page_carries_trace_ui_url_escaped_and_the_default_top_k(
    client_with: TestClient,
) -> None:
    page = client_with.get("/").text
    assert (
        'data-trace-url="http://jaeger:16686/trace/{trace_id}?a=&quot;b&quot;&amp;c=&lt;x&gt;"'
        in page
    )
    (top_k,) = [attrs for tag, attrs in parse(page).tags if attrs.get("id") == "top-k"]
    assert top_k["value"] == "3"


def test_without_trace_ui_url_the_page_links_no_trace(fake_client: TestClient) -> None:
    page = fake_client.get("/").text
    assert 'data-trace-url=""' in page
    assert 'data-api-keys="none"' in page  # and asks for no key
    assert "__" not in page  # every slot of the template is filled


# --- with API keys (API_KEYS_FILE)


@pytest.fixture
def keyed_client(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """An app with ``API_KEYS_FILE`` holding one key; the client and the key."""
    keys_file = tmp_path / "api-keys"
    key = add_key(keys_file, "page")
    with TestClient(controlled_app(ControlledBackend(), api_keys_file=keys_file)) as client:
        yield ready_client(client), key


def test_with_api_keys_the_page_loads_without_one_and_says_one_is_needed(
    keyed_client: tuple[TestClient, str],
) -> None:
    client, key = keyed_client
    page = client.get("/")
    assert page.status_code == 200
    assert_page_headers(page.headers)
    assert 'data-api-keys="required"' in page.text
    assert "__" not in page.text
    for path in ASSETS:  # a browser loads them without a key too
        assert client.get(path).status_code == 200, path
    # The API behind the page still needs the key the person pastes.
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"x-api-key": key}).status_code == 200


@pytest.mark.parametrize(
    ("path", "open_without_key"),
    [
        ("/", True),
        ("/ui/app.js", True),
        ("/ui/missing.js", True),  # a 404 either way
        ("/ui/", False),
        ("/ui/a/b", False),
        ("/uiapp.js", False),
        ("/models", False),
        ("/predict", False),
    ],
)
def test_only_the_page_and_its_assets_are_open_without_a_key(
    path: str, open_without_key: bool
) -> None:
    assert needs_key(path) is not open_without_key


# --- what the page may do


def asset_text(name: str) -> str:
    return (UI_DIR / name).read_text(encoding="utf-8")


def test_the_page_refers_to_nothing_outside_the_gateway() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = asset_text(name)
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text), name
    # The icon's only URL is the SVG namespace, which is never fetched.
    assert re.findall(r"https?://[^\"]+", asset_text("icon.svg")) == ["http://www.w3.org/2000/svg"]


def test_the_page_calls_only_the_public_api_and_stores_nothing() -> None:
    script = asset_text("app.js")
    assert sorted(set(re.findall(r"fetch\(\s*(\"[^\"]*\"|\w+)", script))) == [
        '"/models"',
        "predictUrl",
    ]
    builds = re.search(r"function predictUrl\(.*?\n}", script, re.S)
    assert builds is not None
    for part in ("`/models/${encodeURIComponent(model)}`", "`/versions/${", "}/predict?top_k="):
        assert part in builds.group(0), part
    # Both calls carry the key a person pasted, as X-API-Key (never as Authorization,
    # the ADMIN_TOKEN's header), from one helper.
    assert script.count("headers: apiHeaders()") == 2
    assert 'headers["X-API-Key"] = apiKey' in script
    for forbidden in (
        "/v2/",
        "repository",
        "Authorization",
        "localStorage",
        "sessionStorage",
        "indexedDB",
        "document.cookie",
        "innerHTML",
        "eval(",
        "new Function",
    ):
        assert forbidden not in script, forbidden


def test_the_page_has_words_for_every_quality_signal_and_documents_its_bound() -> None:
    """An answer's ``quality`` lists every continuous signal (api/routes.py); the page
    says each in words, so a signal added to the gateway needs its words here too."""
    script = asset_text("app.js")
    table = re.search(r"const SIGNAL_WORDS = \{(.*?)\n\};", script, re.S)
    assert table is not None
    worded = re.findall(r"^\s+(\w+): \[", table.group(1), re.M)
    assert sorted(worded) == sorted(CONTINUOUS)
    # Unusual at a percentile <= 5 or >= 95: the bound docs/ui.md states, the server's
    # own for a low-confidence answer (below the reference's 5th percentile).
    bound = re.search(r"^const UNUSUAL_PERCENT = (\d+);$", script, re.M)
    assert bound is not None and bound.group(1) == "5"
    docs = (ROOT / "docs" / "ui.md").read_text(encoding="utf-8")
    assert "is ≤ 5 or ≥ 95" in docs


def test_every_page_file_ships_in_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["inference_gateway"]
    for path in UI_DIR.iterdir():
        relative = f"ui/{path.name}"
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# --- metrics


def test_the_page_is_not_prediction_traffic_in_metrics(fake_client: TestClient) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css", "/ui/icon.svg"):
        assert fake_client.get(path).status_code == 200
    exposition = fake_client.get("/metrics").text
    endpoints = set(re.findall(r'^http_requests_total\{[^}]*endpoint="([^"]*)"', exposition, re.M))
    # One series for the page and one for all of its assets (their route template).
    assert {"/", "/ui/{name}"} <= endpoints
    assert not [e for e in endpoints if e.startswith("/ui/") and e != "/ui/{name}"]
    assert not [e for e in ("/", "/ui/{name}") if PREDICTION_ENDPOINTS.fullmatch(e)]
