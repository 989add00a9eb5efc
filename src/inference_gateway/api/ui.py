"""The page for people: ``GET /`` and its static assets under ``/ui/``.

The page is four files shipped in the package (``inference_gateway/ui/``): no build
step, nothing fetched from elsewhere. It talks only to the public API (``GET /models``
and the prediction routes), never to the model repository extension, and stores
nothing. With ``API_KEYS_FILE`` set the page and its assets stay open (they hold no
secret) and the page asks for a key, which it keeps in memory and sends as ``X-API-Key``
on its API calls. The page and its assets carry a strict Content-Security-Policy: scripts and
styles from the gateway only, no inline script, images from the gateway or the
``blob:`` URLs of the files a person picked.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response

from inference_gateway.config import Settings

#: Where the page's files live: the ``ui`` directory of the installed package.
UI_PACKAGE = ("inference_gateway", "ui")
#: The assets the page loads, by suffix; anything else under ``/ui/`` is a 404 (the
#: page's HTML template included: ``GET /`` serves it filled in).
MEDIA_TYPES: dict[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' blob:",  # thumbnails of the picked files
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

#: Sent with the page and its assets (not with the API's answers).
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on each load (the assets have ETags): an upgrade shows at once.
    "Cache-Control": "no-cache",
}

_TRACE_URL_SLOT = "__TRACE_UI_URL__"
_TOP_K_SLOT = "__TOP_K_DEFAULT__"
_API_KEYS_SLOT = "__API_KEYS__"
#: The prefix of the page's assets.
ASSETS_PREFIX = "/ui/"


def is_page_path(path: str) -> bool:
    """Whether ``path`` is the page or one of its assets: open without an API key, since
    a browser sends none when it loads them (the page then asks for one). Exactly the
    routes ``/`` and ``/ui/{name}``: nothing deeper, so no other route hides under it."""
    name = path.removeprefix(ASSETS_PREFIX)
    return path == "/" or (path.startswith(ASSETS_PREFIX) and "/" not in name and name != "")


def _ui_files() -> Traversable:
    return resources.files(UI_PACKAGE[0]) / UI_PACKAGE[1]


def render_page(settings: Settings) -> str:
    """The page's HTML with this gateway's settings filled in: where trace ids link
    (``TRACE_UI_URL``, empty for none), the default number of classes and whether the
    API needs a key (``required`` or ``none``; never a key)."""
    page = (_ui_files() / "index.html").read_text(encoding="utf-8")
    return (
        page.replace(_TRACE_URL_SLOT, html.escape(settings.trace_ui_url or "", quote=True))
        .replace(_TOP_K_SLOT, str(settings.top_k_default))
        .replace(_API_KEYS_SLOT, "required" if settings.api_keys_file is not None else "none")
    )


@dataclass(frozen=True, slots=True)
class Asset:
    """One file the page loads, read once when the app is built."""

    body: bytes
    media_type: str
    etag: str

    def matches(self, if_none_match: str | None) -> bool:
        """Whether a conditional request's ``If-None-Match`` names this version."""
        if if_none_match is None:
            return False
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return self.etag in tags or "*" in tags


def load_assets() -> dict[str, Asset]:
    """The page's scripts, style sheet and icon by file name (a missing package
    directory fails here, when the app is built, not at the first visit)."""
    assets = {}
    for entry in _ui_files().iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    return assets


def install_ui(app: FastAPI, settings: Settings) -> None:
    """Serve the page at ``/`` and its assets at ``/ui/{name}`` on ``app``.

    In metrics and traces the page is the route ``/`` and every asset the one
    template ``/ui/{name}``: neither adds series per file nor counts as prediction
    traffic.
    """
    page = render_page(settings)
    assets = load_assets()

    async def index() -> HTMLResponse:
        """The page: pick a model, drop images, see what the model saw."""
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    async def asset(name: str, request: Request) -> Response:
        """One of the page's files (with an ETag: 304 when unchanged); 404 otherwise."""
        found = assets.get(name)
        if found is None:
            raise HTTPException(status_code=404)
        headers = {**SECURITY_HEADERS, "ETag": found.etag}
        if found.matches(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSETS_PREFIX + "{name}", asset, methods=["GET"], include_in_schema=False)
