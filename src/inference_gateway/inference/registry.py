"""Every model the gateway serves, by name and version: the one place ``api/`` asks.

The registry holds one `ModelHost` per model version and routes requests to them.
`apply` makes the served set match a list of `ModelSource`s (the built-in model, or
what a model repository holds): new versions are loaded and then routed to; a changed
version is loaded beside the old one, which keeps serving until the new one is warm
(or keeps serving for good when the new one fails to load); a removed version leaves
the routing table at once, finishes the requests already routed to it (its leases),
then is unloaded. No request is lost or answered by a half-loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from inference_gateway.errors import (
    InferenceGatewayException,
    ModelNotFoundException,
    ModelNotLoadedException,
    ServiceDrainingException,
)
from inference_gateway.inference.host import (
    BatchingConfig,
    LoadRetry,
    ModelHost,
    ModelState,
)
from inference_gateway.inference.model import ModelLoader, ModelSpec
from inference_gateway.inference.preprocess import ImageLimits
from inference_gateway.inference.quality import Reference
from inference_gateway.inference.workers import WorkerReadiness
from inference_gateway.observability.logging import log_error
from inference_gateway.observability.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model version to serve: how to load it and how to batch it."""

    name: str
    version: str
    loader: ModelLoader
    batching: BatchingConfig
    spec: ModelSpec | None = None  # what the configuration says, before loading
    fingerprint: str = ""  # changes when its files change: reload it


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version as `GET /models` shows it."""

    version: str
    state: ModelState
    reason: str | None
    spec: ModelSpec | None
    backend: str | None
    batching: BatchingConfig
    # A changed copy failed to load (or fails and is retried); this one still serves.
    reload_error: str | None = None
    # The loaded version's reference profile (model-quality signals on), or why its
    # reference.json is not used.
    reference: Reference | None = None
    reference_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model as `GET /models` shows it."""

    name: str
    state: ModelState
    reason: str | None
    default_version: str | None
    versions: tuple[VersionStatus, ...] = field(default_factory=tuple)


#: What `/ready` and ``POST /predict`` say when not one model version is serving.
NO_MODEL_SERVED = (
    "No model is served: none was found, every one was unloaded, or none has loaded; "
    "add one to the model repository, or load one (POST /v2/repository/models/{name}/load)."
)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


class ModelRegistry:
    """The served models: routing, readiness, live changes, shutdown."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        limits: ImageLimits,
        preprocess_workers: int,
        warmup: bool = True,
        stall_seconds: float = 10.0,
        load_retry: LoadRetry | None = None,
        peers: WorkerReadiness | None = None,
        default_model: str | None = None,
        retire_grace_seconds: float = 30.0,
        private_paths: Sequence[Path] = (),
    ) -> None:
        """Prepare the shared decoding pool; nothing is loaded until `apply`.

        ``preprocess_workers`` of 0 decodes small images on the event loop (a worker
        with one core); ``peers``: the other workers of the same server, when there are
        several: ready means all are. ``default_model`` answers ``POST /predict``.
        """
        self._telemetry = telemetry
        self._limits = limits
        self._decode_on_loop = preprocess_workers == 0
        self._pool = ThreadPoolExecutor(max(preprocess_workers, 1), "preprocess")
        self._warmup = warmup
        self._stall_seconds = stall_seconds
        self._load_retry = load_retry or LoadRetry()
        self._peers = peers
        self.default_model = default_model
        self._retire_grace = retire_grace_seconds
        # Directories whose absolute paths stay out of what clients read (the model
        # repository, the cache): reasons name files relative to them.
        self._private = sorted({str(p).rstrip("/") + "/" for p in private_paths}, key=len)[::-1]
        self._routes: dict[str, dict[str, ModelHost]] = {}  # name -> version -> serving host
        self._sources: dict[tuple[str, str], ModelSource] = {}  # what each routed host runs
        self._pending: dict[tuple[str, str], ModelHost] = {}  # replacements still loading
        self._model_errors: dict[str, str] = {}  # models whose configuration is broken
        self._reload_errors: dict[tuple[str, str], str] = {}
        self._tried: dict[tuple[str, str], str] = {}  # the newest fingerprint loaded or tried
        self._doomed: set[tuple[str, str]] = set()  # unwanted, serving until replaced
        # The versions found at start-up: readiness waits for each one's first attempt.
        self._initial: set[ModelHost] = set()
        self._applied = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loads: dict[ModelHost, asyncio.Task[None]] = {}  # each host's loading task
        self._gating: set[str] = set()  # models whose absence makes /ready 503
        self._retired: set[ModelHost] = set()
        self._stopping = False  # a stop began: not ready, still serving
        self._draining = False  # refusing new work
        self._marked_ready = False

    # --- what is served -------------------------------------------------------------
    def apply(self, sources: Iterable[ModelSource], errors: Mapping[str, str]) -> None:
        """Serve exactly ``sources`` (and report ``errors``: model name → why its
        configuration cannot be served); call on the event loop. Nothing changes once
        the service stops."""
        if self._draining or self._stopping:
            return
        wanted = {(s.name, s.version): s for s in sources}
        metrics = self._telemetry.metrics
        for key, source in wanted.items():
            current = self._sources.get(key)
            self._doomed.discard(key)
            if current is None:
                host = self._host(source)
                self._routes.setdefault(source.name, {})[source.version] = host
                self._sources[key] = source
                self._tried[key] = source.fingerprint
                if metrics is not None:
                    metrics.initialise_model(key)
                if not self._applied:
                    self._initial.add(host)
                self._spawn(self._first_load(host), host)
            elif source.fingerprint != self._tried.get(key):
                # Its files changed (and these files were not tried yet): load them
                # beside the serving copy; a replacement still loading is superseded.
                self._tried[key] = source.fingerprint
                self._drop_pending(key)
                replacement = self._host(source)
                self._pending[key] = replacement
                self._spawn(self._replace(key, source, replacement), replacement)
        for key in self._sources:
            if key not in wanted and key[0] not in errors:
                self._doomed.add(key)
        for name, error in errors.items():
            if self._model_errors.get(name) != error:  # said once, not at every poll
                self._telemetry.logger.error(
                    "Model cannot be served", model_name=name, reason=error
                )
        self._model_errors = {name: self.redact(error) for name, error in errors.items()}
        if not self._applied:
            self._gating.update(self.names())  # the models found at start-up
        self._applied = True
        self._settle_doomed()
        # A model gone from the catalog gates readiness again only once it serves again.
        self._gating.intersection_update(self.names())

    def _settle_doomed(self) -> None:
        """Remove the versions no longer wanted, except a model's last serving one while
        its successor is not serving yet (or failed to load): that one keeps serving."""
        for key in sorted(self._doomed):
            name = key[0]
            others = [
                host
                for version, host in self._routes.get(name, {}).items()
                if (name, version) not in self._doomed
            ]
            if not others or any(host.ready for host in others):
                self._doomed.discard(key)
                self._remove(key)
        for name in [n for n in self._routes if not self._routes[n]]:
            del self._routes[name]

    def redact(self, text: str) -> str:
        """``text`` without the private directories' absolute paths (logs keep them)."""
        for prefix in self._private:
            text = text.replace(prefix, "")
        return text

    def _host(self, source: ModelSource) -> ModelHost:
        return ModelHost(
            source.loader,
            self._telemetry,
            model_name=source.name,
            model_version=source.version,
            limits=self._limits,
            pool=self._pool,
            decode_on_loop=self._decode_on_loop,
            batching=source.batching,
            warmup=self._warmup,
            stall_seconds=self._stall_seconds,
            load_retry=self._load_retry,
            redact=self.redact,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], host: ModelHost | None = None) -> None:
        """Run ``work`` in the background; a host's load is remembered so that retiring
        the host cancels it. A failure is logged, never lost."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        if host is not None:
            self._loads[host] = task
        task.add_done_callback(partial(self._finished, host))

    def _finished(self, host: ModelHost | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if host is not None and self._loads.get(host) is task:
            del self._loads[host]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log_error(self._telemetry.logger, "Model registry task failed", error)

    def _publish(self, host: ModelHost) -> None:
        """Publish the serving host of a version as loaded, with its size and its
        model-quality reference."""
        if self._telemetry.metrics is not None and host.model is not None:
            self._telemetry.metrics.set_model_state(
                host.key, loaded=True, memory_bytes=host.model.memory_bytes
            )
            host.publish_reference()

    async def _first_load(self, host: ModelHost) -> None:
        try:
            serving = await host.start()
        finally:
            if host.state is not ModelState.LOADING:
                self._initial.discard(host)  # its first attempt is over
        if serving and self._routes.get(host.model_name, {}).get(host.model_version) is host:
            self._publish(host)
            self._gating.add(host.model_name)  # a model that served gates readiness
            self._settle_doomed()
        self._note_readiness()

    async def _replace(self, key: tuple[str, str], source: ModelSource, host: ModelHost) -> None:
        """Load ``host`` beside the one serving ``key``; swap when it is warm."""
        serving = await host.start()
        if self._pending.get(key) is not host:
            return  # superseded or removed meanwhile: whoever did so retires it
        del self._pending[key]
        if not serving:
            self._reload_errors[key] = host.reason or "it failed to load"
            self._telemetry.logger.error(
                "Model update failed; the previous files keep serving",
                model_name=key[0], model_version=key[1], reason=self._reload_errors[key],
            )  # fmt: skip
            await host.close(0)
            return
        old = self._routes[key[0]][key[1]]
        self._routes[key[0]][key[1]] = host
        self._sources[key] = source
        self._reload_errors.pop(key, None)
        old.retire()  # from now on the new host writes the version's gauges
        self._publish(host)
        self._gating.add(key[0])
        self._telemetry.logger.info("Model updated", model_name=key[0], model_version=key[1])
        self._settle_doomed()
        self._note_readiness()
        self._spawn(self._retire(old))

    def _drop_pending(self, key: tuple[str, str]) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._spawn(self._retire(pending))

    def _remove(self, key: tuple[str, str]) -> None:
        name, version = key
        host = self._routes[name].pop(version)
        del self._sources[key]
        self._reload_errors.pop(key, None)
        self._tried.pop(key, None)
        self._drop_pending(key)
        self._telemetry.logger.info("Model removed", model_name=name, model_version=version)
        self._spawn(self._retire(host))

    async def _retire(self, host: ModelHost) -> None:
        """Out of the routing table already: stop what it is loading, finish the
        requests routed to it, then unload it. When nothing serves its version any more,
        the version's series go."""
        host.retire()
        load = self._loads.pop(host, None)
        if load is not None:
            load.cancel()
        self._retired.add(host)
        try:
            async with asyncio.timeout(self._retire_grace):
                while host.leases:
                    await host.released.wait()
                    host.released.clear()
        except TimeoutError:
            pass
        try:
            await host.close(self._retire_grace)
        finally:
            self._retired.discard(host)
        if host.key not in self._sources and self._telemetry.metrics is not None:
            self._telemetry.metrics.forget_model(host.key)

    # --- routing ----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every model name the gateway knows, served or broken."""
        return sorted(set(self._routes) | set(self._model_errors))

    async def wait_attempted(self, name: str) -> None:
        """Return once every version of ``name``, and every replacement of one, has
        made its first attempt to load (it serves, or failed once)."""
        while True:
            hosts = [*self._routes.get(name, {}).values()]
            hosts += [host for key, host in self._pending.items() if key[0] == name]
            waiting = [h.attempted.wait() for h in hosts if h.state is ModelState.LOADING]
            if not waiting:
                return
            # The hosts may change meanwhile (a newer file, a removal): look again.
            tasks = [asyncio.ensure_future(w) for w in waiting]
            try:
                await asyncio.wait(tasks, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()

    def flush_signals(self) -> None:
        """Count every answer's model-quality signals now (before a scrape), instead
        of within `signal_batch.FLUSH_SECONDS`."""
        for versions in self._routes.values():
            for host in versions.values():
                host.signals.flush()

    def served(self) -> list[tuple[str, str]]:
        """Every routed model version, by name then version."""
        return [
            (name, version)
            for name in sorted(self._routes)
            for version in sorted(self._routes[name], key=_version_order)
        ]

    def resolve(self, name: str | None = None, version: str | None = None) -> ModelHost:
        """The host that answers ``name`` (default: the default model) at ``version``
        (default: the highest version that is serving).

        Raises `ModelNotFoundException` for an unknown model or version (nothing else
        happens for it: no metric series, no work), `ServiceDrainingException` while
        the service stops, and `ModelNotLoadedException` for a model whose
        configuration is broken, or when no model is named and none is served.
        """
        if self._draining:
            raise ServiceDrainingException("The service is shutting down.")
        if name is None:
            name = self._default_name()
        versions = self._routes.get(name)
        if not versions:
            if name in self._model_errors:
                raise ModelNotLoadedException(
                    f"Model {name} cannot be served: {self._model_errors[name]}"
                )
            raise ModelNotFoundException(
                f"There is no model {name[:64]!r}; models: {', '.join(self.names()) or 'none'}."
            )
        if version is None:
            return self._default_host(versions)
        host = versions.get(version)
        if host is None:
            raise ModelNotFoundException(
                f"Model {name} has no version {version[:32]!r}; versions: "
                f"{', '.join(sorted(versions, key=_version_order))}."
            )
        return host

    def _default_name(self) -> str:
        names = self.names()
        if not names:
            raise ModelNotLoadedException(NO_MODEL_SERVED)
        if self.default_model is not None:
            return self.default_model
        if len(names) == 1:
            return names[0]
        raise ModelNotFoundException(
            "Several models are served and no DEFAULT_MODEL is set; name one: "
            f"POST /models/{{name}}/predict with one of {', '.join(names)}."
        )

    @staticmethod
    def _default_host(versions: Mapping[str, ModelHost]) -> ModelHost:
        ordered = sorted(versions.values(), key=lambda h: _version_order(h.model_version))
        ready = [h for h in ordered if h.ready]
        return (ready or ordered)[-1]

    @asynccontextmanager
    async def lease(
        self, name: str | None = None, version: str | None = None
    ) -> AsyncIterator[ModelHost]:
        """`resolve`, holding the host in service until the block ends: a version
        replaced or removed meanwhile still answers the requests routed to it."""
        host = self.resolve(name, version)
        host.leases += 1
        try:
            yield host
        finally:
            host.leases -= 1
            if not host.leases:
                host.released.set()

    # --- readiness and description -----------------------------------------------------
    def check_ready(self) -> ModelHost | None:
        """Raise 503 unless every model has a serving version, and at least one model
        is served (and, with several workers, every worker is ready); return the
        default model's host, if there is one."""
        if self._draining or self._stopping:
            raise ServiceDrainingException("The service is shutting down.")
        self._check_models()
        if self._peers is not None and not self._peers.all_ready():
            raise ModelNotLoadedException(
                f"{self._peers.ready_count()} of {self._peers.expected} workers are ready."
            )
        with contextlib.suppress(ModelNotFoundException):
            return self.resolve()
        return None

    def _check_models(self) -> None:
        """Raise 503 unless every model of this worker has a serving version."""
        self.check_live()
        statuses = self.describe()
        problems = [
            f"{status.name}: {status.state.value}"
            + (f" ({status.reason})" if status.reason else "")
            for status in statuses
            if status.state is not ModelState.READY and status.name in self._gating
        ]
        problems += [
            f"{h.model_name} version {h.model_version}: LOADING"
            for h in sorted(self._initial, key=lambda h: h.key)
            if h.state is ModelState.LOADING
        ]
        serving = any(h.ready for versions in self._routes.values() for h in versions.values())
        if problems or not serving:
            refusal = ModelNotLoadedException(
                "Not every model is ready: " + "; ".join(problems) if problems else NO_MODEL_SERVED
            )
            refusal.extensions["models"] = [
                {"name": s.name, "state": s.state.value, "reason": s.reason} for s in statuses
            ]
            raise refusal
        for versions in self._routes.values():
            for host in versions.values():
                if host.ready:
                    host.check_ready()  # a stalled forward pass, a failed worker

    def check_live(self) -> None:
        """Raise `ModelFailedException` when a model's worker has stopped for good."""
        for versions in self._routes.values():
            for host in versions.values():
                host.check_live()

    def describe(self, name: str | None = None) -> list[ModelStatus]:
        """Every model (or the one named) with the state of each version."""
        names = [name] if name is not None else self.names()
        return [self._describe(n) for n in names]

    def _describe(self, name: str) -> ModelStatus:
        versions = self._routes.get(name, {})
        statuses = tuple(
            VersionStatus(
                version=host.model_version,
                state=host.state,
                reason=host.reason,
                spec=host.model.spec if host.model is not None else self._spec_of(host),
                backend=host.model.backend.name if host.model is not None else None,
                batching=host.batching,
                reload_error=self._reload_error(host.key),
                reference=host.model.reference if host.model is not None else None,
                reference_error=host.model.reference_error if host.model is not None else None,
            )
            for host in sorted(versions.values(), key=lambda h: _version_order(h.model_version))
        )
        error = self._model_errors.get(name)
        serving = [v for v in statuses if v.state is ModelState.READY]
        default = serving[-1].version if serving else None
        if serving:
            state, reason = ModelState.READY, error  # a broken change: the old files serve
        elif error is not None:
            state, reason = ModelState.UNAVAILABLE, error
        elif any(v.state is ModelState.LOADING for v in statuses):
            state, reason = ModelState.LOADING, None
        else:
            state = ModelState.UNAVAILABLE
            reason = "; ".join(f"version {v.version}: {v.reason}" for v in statuses) or None
        return ModelStatus(name, state, reason, default, statuses)

    def _reload_error(self, key: tuple[str, str]) -> str | None:
        """Why the changed files of ``key`` do not serve: the last error of a replacement
        still retrying (with its attempt count and next try), else of the last one that
        gave up."""
        pending = self._pending.get(key)
        if pending is not None and pending.load_error is not None:
            return pending.reason
        return self._reload_errors.get(key)

    def _spec_of(self, host: ModelHost) -> ModelSpec | None:
        source = self._sources.get(host.key)
        return source.spec if source is not None else None

    def _note_readiness(self) -> None:
        """Tell the other workers once every model of this one is ready."""
        if self._peers is None or self._marked_ready:
            return
        try:
            self._check_models()
        except InferenceGatewayException:
            return
        self._peers.mark_ready()
        self._marked_ready = True

    # --- shutdown -----------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """A stop began: ``/ready`` answers 503 from now on, so load balancers stop
        sending, but predictions are served as before."""
        self._stopping = True

    def expire(self) -> None:
        """The stop's grace period is over: refuse new work, and answer what still
        waits for a forward pass with 503 ``draining``."""
        self.begin_drain()
        for versions in self._routes.values():
            for host in versions.values():
                if host.batcher is not None:
                    host.batcher.expire()

    def begin_drain(self) -> None:
        """Refuse new work from now on (``/ready`` and new predictions get 503)."""
        self._draining = True
        for versions in self._routes.values():
            for host in versions.values():
                host.begin_drain()

    async def close(self, grace_seconds: float) -> None:
        """Stop loading, let admitted work finish within the grace period, unload all."""
        self.begin_drain()
        if self._peers is not None:
            self._peers.mark_stopped()
        for task in list(self._tasks):
            task.cancel()
        hosts = [h for versions in self._routes.values() for h in versions.values()]
        hosts += [*self._pending.values(), *self._retired]
        await asyncio.gather(
            *(h.close(grace_seconds) for h in hosts), *self._tasks, return_exceptions=True
        )
        self._pool.shutdown(wait=False, cancel_futures=True)
