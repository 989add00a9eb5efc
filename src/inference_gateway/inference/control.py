"""What is served, and who changes it: the catalog, polling, and explicit load/unload.

`ModelControl` joins a catalog (the built-in model, or a model repository) to the
registry. `refresh` reads the catalog and makes the registry serve what it holds; the
poll loop (``MODEL_REPOSITORY_POLL_SECONDS``) and the model repository extension
(``POST /v2/repository/...``, its gRPC twins) both go through it, one at a time.

Explicit control and polling coexist: `unload` takes a model out of service and pins
it unloaded, so later scans leave it out, until `load` asks for it again; `load`
rescans the catalog first, so it also picks up files changed since the last poll, and
waits for the model's first load attempt. Loading is only ever from the catalog: a
name, never a path. Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import structlog

from inference_gateway.errors import (
    InferenceTimeoutException,
    ModelLoadFailedException,
    ModelNotFoundException,
)
from inference_gateway.inference.catalog import CatalogReading
from inference_gateway.inference.host import ModelState
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.logging import log_error

#: The index's reason for a model pinned unloaded.
UNLOADED_REASON = "unloaded"


class Catalog(Protocol):
    """Where the served models come from (`catalog.BuiltinCatalog`, `RepositoryCatalog`)."""

    async def read(self) -> CatalogReading:
        """What the catalog holds now."""
        ...


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model version of the catalog, as the repository index lists it."""

    name: str
    version: str | None  # None: a model whose configuration is broken (no versions)
    state: ModelState | None  # None: pinned unloaded (not served)
    reason: str


class ModelControl:
    """The catalog, the registry, and the explicit changes between them."""

    def __init__(
        self,
        catalog: Catalog,
        registry: ModelRegistry,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """Serve ``catalog``'s models through ``registry``; nothing happens until `refresh`."""
        self.catalog = catalog
        self._registry = registry
        self._logger = logger
        self._warned: set[str] = set()
        self._unloaded: set[str] = set()  # pinned unloaded until loaded again
        self._reading = CatalogReading(sources=(), errors={})
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the catalog and make the registry serve what it holds, less what was
        unloaded (the registry logs each broken model once; each warning is logged
        once too, not at every poll)."""
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        reading = await self.catalog.read()
        for warning in reading.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self._logger.warning("Model repository entry skipped", reason=warning)
        self._reading = reading
        self._apply()

    def _apply(self) -> None:
        """Serve the last reading, less the models pinned unloaded."""
        reading, unloaded = self._reading, self._unloaded
        self._registry.apply(
            [s for s in reading.sources if s.name not in unloaded],
            {n: e for n, e in reading.errors.items() if n not in unloaded},
        )

    async def poll(self, every_seconds: float) -> None:
        """Rescan every ``every_seconds`` and apply what changed, until cancelled."""
        failing = False
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.refresh()
                failing = False
            except Exception as exc:  # the repository vanished, a disk error: try again later
                if not failing:  # once per outage, not at every poll
                    log_error(self._logger, "Model repository scan failed", exc)
                failing = True

    @contextlib.asynccontextmanager
    async def polling(self, every_seconds: float) -> AsyncIterator[None]:
        """`poll` in the background (when ``every_seconds`` is set) until the block ends."""
        task = (
            asyncio.create_task(self.poll(every_seconds), name="model-repository-poll")
            if every_seconds
            else None
        )
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- the model repository extension ---------------------------------------------
    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every model of the catalog (as last read) with each version's state: the
        ones served, the ones pinned unloaded, and the broken ones with their reason."""
        entries: list[IndexEntry] = []
        versions: dict[str, list[str]] = {}
        for source in self._reading.sources:
            versions.setdefault(source.name, []).append(source.version)
        served = {status.name: status for status in self._registry.describe()}
        for name in sorted(set(versions) | set(self._reading.errors) | set(served)):
            status = served.get(name)
            if name in self._unloaded:
                entries += [
                    IndexEntry(name, version, None, UNLOADED_REASON)
                    for version in versions.get(name, [])
                ]
            elif status is not None and status.versions:
                entries += [
                    IndexEntry(name, v.version, v.state, v.reason or v.reload_error or "")
                    for v in status.versions
                ]
            else:
                error = self._registry.redact(self._reading.errors.get(name, ""))
                entries.append(IndexEntry(name, None, ModelState.UNAVAILABLE, error))
        if ready_only:
            entries = [e for e in entries if e.state is ModelState.READY]
        return entries

    async def load(self, name: str, timeout_seconds: float) -> None:
        """Serve ``name`` from the catalog (rescanned first), and wait for the first
        attempt to load each of its versions.

        Raises:
            ModelNotFoundException: The catalog holds no model ``name``.
            ModelLoadFailedException: Its configuration is broken, or a version failed
                to load (the registry keeps retrying a failure that may pass).
            InferenceTimeoutException: A version is still loading after
                ``timeout_seconds``; it goes on loading.
        """
        async with self._lock:
            pinned = name in self._unloaded
            self._unloaded.discard(name)
            try:
                await self._refresh()
            except BaseException:
                if pinned:  # nothing was loaded: it stays unloaded
                    self._unloaded.add(name)
                raise
            reading = self._reading
            if not any(s.name == name for s in reading.sources) and name not in reading.errors:
                raise ModelNotFoundException(f"The model repository holds no model {name[:64]!r}.")
            if name in reading.errors:
                raise ModelLoadFailedException(
                    f"Model {name} cannot be loaded: {self._registry.redact(reading.errors[name])}"
                )
        self._logger.info("Model load requested", model_name=name)
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._registry.wait_attempted(name)
        except TimeoutError:
            raise InferenceTimeoutException(
                f"Model {name} is still loading; the repository index shows when it is ready."
            ) from None
        status = self._registry.describe(name)[0]
        if not status.versions:  # the service drains: nothing was applied
            self._registry.resolve(name)
        failed = [v for v in status.versions if v.state is not ModelState.READY]
        if failed:
            raise ModelLoadFailedException(
                f"Model {name} failed to load: "
                + "; ".join(f"version {v.version}: {v.reason}" for v in failed)
            )

    async def unload(self, name: str) -> None:
        """Take ``name`` out of service and keep it out (scans skip it) until `load`.
        Requests already routed to it finish first; this does not wait for them.

        Raises:
            ModelNotFoundException: Neither the catalog nor the registry knows ``name``.
        """
        async with self._lock:
            known = {s.name for s in self._reading.sources} | set(self._reading.errors)
            if name not in known and name not in self._registry.names():
                raise ModelNotFoundException(f"The model repository holds no model {name[:64]!r}.")
            self._unloaded.add(name)
            self._apply()
        self._logger.info("Model unloaded on request", model_name=name)
