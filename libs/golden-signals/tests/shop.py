"""A service laid out as FastAPI's "bigger applications" tutorial lays one out: routers in
their own modules with prefixes, tags and dependencies, included with more prefixes,
plus a streaming answer, a background task, a failing route and a health probe.
Served by uvicorn in the tests (``shop:app``) and imported by them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, HTTPException
from fastapi.responses import StreamingResponse

from golden_signals import instrument

#: Seconds the background task of ``POST /orders`` runs after its answer.
BACKGROUND_SECONDS = float(os.environ.get("SHOP_BACKGROUND_SECONDS", "1.0"))
#: Seconds between the two chunks of ``GET /reports/stream``.
STREAM_GAP_SECONDS = 0.3

log = logging.getLogger("shop")


async def get_token_header(x_token: Annotated[str, Header()] = "fake-super-secret-token") -> None:
    """The tutorial's router dependency: a wrong token is a 400."""
    if x_token != "fake-super-secret-token":
        raise HTTPException(status_code=400, detail="X-Token header invalid")


items = APIRouter(prefix="/items", tags=["items"], dependencies=[Depends(get_token_header)])


@items.get("/{item_id}")
async def read_item(item_id: str) -> dict[str, str]:
    """One item; logs a line of the app's own through `logging`."""
    log.info("reading item %s", item_id)
    if item_id == "missing":
        raise HTTPException(status_code=404, detail="Item not found")
    return {"item_id": item_id}


admin = APIRouter()


@admin.post("/reset")
async def reset() -> dict[str, bool]:
    """A route of a router included with a prefix and no prefix of its own."""
    return {"reset": True}


async def _slow_follow_up() -> None:
    await asyncio.sleep(BACKGROUND_SECONDS)
    log.info("follow-up done")


async def create_order(tasks: BackgroundTasks) -> dict[str, str]:
    """Answers at once; a follow-up runs ``BACKGROUND_SECONDS`` after the answer."""
    tasks.add_task(_slow_follow_up)
    return {"order": "accepted"}


async def stream_report() -> StreamingResponse:
    """Two chunks, ``STREAM_GAP_SECONDS`` apart."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.sleep(STREAM_GAP_SECONDS)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


async def boom() -> None:
    """A bug: an exception nobody handles."""
    raise RuntimeError("the shop's bug")


async def health() -> dict[str, str]:
    """The liveness probe (excluded from every signal by default)."""
    return {"status": "ok"}


def create_app() -> FastAPI:
    """A new app (each test its own)."""
    app = FastAPI()
    app.include_router(items, prefix="/v1")
    app.include_router(admin, prefix="/admin", dependencies=[Depends(get_token_header)])
    app.post("/orders")(create_order)
    app.get("/reports/stream")(stream_report)
    app.get("/boom")(boom)
    app.get("/health")(health)
    return app


app = create_app()
if os.environ.get("SHOP_INSTRUMENT") == "1":  # as served by uvicorn in the tests
    instrument(app, service_name="shop", trace_response_header=True)
