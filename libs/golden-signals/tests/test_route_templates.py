"""The route templates `golden-signals routes|rules` reads from an app are the ones its
requests are counted under: FastAPI's nested included routers (prefixes at every
level, a WebSocket route among them), Starlette Mounts with parameters, and apps
mounted inside one another."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from conftest import samples
from golden_signals import instrument
from golden_signals.routes import declared_routes


def _layered() -> Starlette:
    deep = APIRouter(prefix="/deep")

    @deep.post("/x")
    async def x() -> dict[str, int]:
        return {"x": 1}

    @deep.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    items.include_router(deep)
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    api.include_router(items, prefix="/v1")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("plain")

    return Starlette(
        routes=[Mount("/api", app=api), Mount("/t/{tenant}", routes=[Route("/plain", plain)])]
    )


def test_declared_routes_are_the_templates_with_every_prefix() -> None:
    assert sorted(declared_routes(_layered())) == [
        ("/api/v1/items/deep/ws", frozenset({"WEBSOCKET"})),
        ("/api/v1/items/deep/x", frozenset({"POST"})),
        ("/api/v1/items/{item_id}", frozenset({"GET"})),
        ("/t/{tenant}/plain", frozenset({"GET", "HEAD"})),
    ]


def test_requests_are_counted_under_the_declared_templates(log_stream: io.StringIO) -> None:
    app = _layered()
    instrument(app, log_stream=log_stream, include_registry=None)
    client = TestClient(app)
    assert client.post("/api/v1/items/deep/x").status_code == 200
    assert client.get("/api/v1/items/7").status_code == 200
    assert client.get("/t/acme/plain").text == "plain"
    with client.websocket_connect("/api/v1/items/deep/ws"):
        pass
    found: dict[Any, float] = samples(
        client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text
    )
    counted = {dict(labels)["endpoint"] for name, labels in found if name == "http_requests_total"}
    assert counted == {path for path, _ in declared_routes(app)}


def test_a_host_route_is_served_and_its_routes_keep_their_templates(
    log_stream: io.StringIO,
) -> None:
    from starlette.routing import Host

    async def status(request: Request) -> Response:
        return PlainTextResponse("up")

    app = Starlette(
        routes=[Host("api.example.com", app=Starlette(routes=[Route("/status", status)]))]
    )
    instrument(app, log_stream=log_stream, include_registry=None)
    client = TestClient(app, base_url="http://api.example.com")
    assert client.get("/status").text == "up"
    found = samples(client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text)
    assert {
        dict(labels)["endpoint"] for name, labels in found if name == "http_requests_total"
    } == {"/status"}


def _mounting(kind: str, static: Path) -> Starlette:
    """Static files, a plain ASGI app and a sub-app (bare, and behind a middleware), each
    under a Mount of ``kind``'s app
    (a FastAPI app leaves no ``route`` for a Mount, Starlette the Mount itself)."""

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    async def item(request: Request) -> Response:
        return PlainTextResponse(request.path_params["item_id"])

    sub = Starlette(routes=[Route("/items/{item_id}", item)])
    mounts = [
        Mount("/static", app=StaticFiles(directory=static)),
        Mount("/raw", app=plain),
        Mount("/v2", app=sub),
        Mount("/v3", app=GZipMiddleware(sub)),  # a sub-app behind a middleware
    ]
    if kind == "fastapi":
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        for mount in mounts:
            app.mount(mount.path, mount.app)
        return app
    return Starlette(routes=mounts)


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
def test_an_app_mounted_without_routes_is_named_by_its_mount(
    kind: str, log_stream: io.StringIO, tmp_path: Path
) -> None:
    """Static files or a plain ASGI app under a Mount count under the Mount's template
    (a missing file too: the files' app answered it), which `declared_routes` lists; a
    path a mounted sub-app's routes do not match is unmatched, as any other."""
    (tmp_path / "a.txt").write_text("a")
    app = _mounting(kind, tmp_path)
    instrument(app, log_stream=log_stream, include_registry=None)
    client = TestClient(app)
    answers = {
        path: client.get(path).status_code
        for path in (
            "/static/a.txt", "/static/gone.txt", "/raw/x/y", "/v2/items/7", "/v2/no",
            "/v3/items/8", "/v3/.env",
        )
    }  # fmt: skip
    assert answers == {
        "/static/a.txt": 200, "/static/gone.txt": 404, "/raw/x/y": 200, "/v2/items/7": 200,
        "/v2/no": 404, "/v3/items/8": 200, "/v3/.env": 404,
    }  # fmt: skip
    found = samples(client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text)
    counted = {
        (dict(labels)["endpoint"], dict(labels)["status"]): count
        for (name, labels), count in found.items()
        if name == "http_requests_total" and count
    }
    assert counted == {
        ("/static", "200"): 1, ("/static", "404"): 1, ("/raw", "200"): 1,
        ("/v2/items/{item_id}", "200"): 1, ("/v3/items/{item_id}", "200"): 1,
        ("unmatched", "404"): 2,
    }  # fmt: skip
    assert sorted(declared_routes(app)) == [
        ("/raw", frozenset()), ("/static", frozenset()),
        ("/v2/items/{item_id}", frozenset({"GET", "HEAD"})),
        ("/v3/items/{item_id}", frozenset({"GET", "HEAD"})),
    ]  # fmt: skip


def test_an_app_mounted_inside_itself_lists_its_routes_once() -> None:
    """A Mount that serves the app again (``/latest``, behind a pass-through wrapper)
    leads back to the routes it is among: listed once, never followed round."""

    class Alias:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    async def item(request: Request) -> Response:
        return PlainTextResponse(request.path_params["item_id"])

    app = Starlette(routes=[Route("/items/{item_id}", item)])
    app.mount("/latest", Alias(app))
    assert declared_routes(app) == [("/items/{item_id}", frozenset({"GET", "HEAD"}))]


def test_a_starlette_app_behind_a_plain_middleware_names_its_mounts_templates(
    log_stream: io.StringIO,
) -> None:
    """An app handed to `instrument` as a middleware around Starlette (what a server
    runs) still has its Mounts name their templates, one series for every tenant."""

    async def item(request: Request) -> Response:
        return PlainTextResponse("ok")

    tenant = Starlette(routes=[Route("/items/{item_id}", item)])
    served = GZipMiddleware(Starlette(routes=[Mount("/t/{tenant}", app=tenant)]))
    client = TestClient(instrument(served, log_stream=log_stream, include_registry=None).app)
    for name in ("acme", "globex", "initech"):
        assert client.get(f"/t/{name}/items/1").status_code == 200
    found = samples(client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text)
    counted = {
        dict(labels)["endpoint"]
        for (name, labels), n in found.items()
        if name == "http_requests_total" and n
    }
    assert counted == {"/t/{tenant}/items/{item_id}"}
