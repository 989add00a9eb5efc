"""The model registry: routing, per-model queues, live changes and readiness, with
backends the tests hold and release."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np
import pytest

from golden_signals.logs import get_logger
from inference_gateway.errors import (
    ModelNotFoundException,
    ModelNotLoadedException,
    QueueFullException,
)
from inference_gateway.inference.catalog import CatalogReading
from inference_gateway.inference.control import ModelControl
from inference_gateway.inference.host import BatchingConfig, ModelState
from inference_gateway.inference.model import LoadedModel, ModelSpec
from inference_gateway.inference.preprocess import ImageLimits
from inference_gateway.inference.registry import ModelRegistry, ModelSource
from inference_gateway.observability.metrics import Metrics
from inference_gateway.observability.telemetry import Telemetry
from tests.helpers import ControlledBackend, wait_until_async

LABELS = tuple(f"class {i}" for i in range(1000))
TENSOR = np.zeros((3, 224, 224), dtype=np.float32)


def _source(
    name: str,
    version: str,
    backend: ControlledBackend,
    *,
    fingerprint: str = "",
    queue: int = 64,
) -> ModelSource:
    def load() -> LoadedModel:
        return LoadedModel(ModelSpec(name, version, LABELS), backend)

    return ModelSource(
        name=name,
        version=version,
        loader=load,
        batching=BatchingConfig(max_batch_size=1, max_queue_size=queue),
        spec=ModelSpec(name, version, LABELS),
        fingerprint=fingerprint,
    )


def _registry(**options: object) -> tuple[ModelRegistry, Metrics]:
    metrics = Metrics(app_name="t", app_version="1", environment="test")
    registry = ModelRegistry(
        Telemetry(metrics=metrics),
        limits=ImageLimits(),
        preprocess_workers=1,
        warmup=False,
        **options,  # type: ignore[arg-type]
    )
    return registry, metrics


def _ready(registry: ModelRegistry) -> bool:
    try:
        registry.check_ready()
    except ModelNotLoadedException:
        return False
    return True


def _serves_version(registry: ModelRegistry, version: str) -> bool:
    return registry.resolve("m").model_version == version


def _serving(registry: ModelRegistry, name: str) -> Callable[[], bool]:
    return lambda: any(
        v.state is ModelState.READY for s in registry.describe(name) for v in s.versions
    )


async def _answer(registry: ModelRegistry, name: str, version: str | None = None) -> str:
    """Submit one tensor to the routed version; return the version that answered."""
    async with registry.lease(name, version) as host:
        assert host.batcher is not None
        await host.batcher.submit(TENSOR, time.monotonic() + 30)
        return host.model_version


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_a_slow_model_does_not_stall_a_fast_one_and_full_queues_are_per_model() -> None:
    slow, fast = ControlledBackend(blocked=True), ControlledBackend()

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("slow", "1", slow, queue=1), _source("fast", "1", fast)], {})
        await wait_until_async(lambda: _ready(registry), what="both ready")
        held = [asyncio.ensure_future(_answer(registry, "slow"))]
        await wait_until_async(slow.entered.is_set, what="one request in the slow model")
        held.append(asyncio.ensure_future(_answer(registry, "slow")))
        await wait_until_async(
            lambda: registry.resolve("slow").batcher.pending == 2,  # type: ignore[union-attr]
            what="slow full",
        )
        with pytest.raises(QueueFullException):
            await _answer(registry, "slow")
        assert await _answer(registry, "fast") == "1"  # answered while slow is stuck
        slow.release.set()
        assert await asyncio.gather(*held) == ["1", "1"]
        await registry.close(5)

    _run(scenario)


def test_routing_defaults_and_unknown_names() -> None:
    backend = ControlledBackend()

    async def scenario() -> None:
        registry, _ = _registry()
        sources = [
            _source("a", "1", backend),
            _source("a", "3", backend),
            _source("b", "1", backend),
        ]
        registry.apply(sources, {})
        await wait_until_async(lambda: _ready(registry), what="ready")
        assert await _answer(registry, "a") == "3"  # the highest serving version
        assert await _answer(registry, "a", "1") == "1"
        with pytest.raises(ModelNotFoundException, match="versions: 1, 3"):
            registry.resolve("a", "2")
        with pytest.raises(ModelNotFoundException, match="models: a, b"):
            registry.resolve("c")
        with pytest.raises(ModelNotFoundException, match="no DEFAULT_MODEL"):
            registry.resolve()
        registry.default_model = "b"
        assert registry.resolve().model_name == "b"
        await registry.close(5)

    _run(scenario)


def test_a_version_no_longer_wanted_serves_until_its_successor_is_warm() -> None:
    old, new = ControlledBackend(), ControlledBackend()
    gate = threading.Event()

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("m", "1", old)], {})
        await wait_until_async(_serving(registry, "m"), what="v1")
        new.release.clear()  # v2's warm-up is not run; hold its first answer instead
        slow_source = _source("m", "2", new)
        original = slow_source.loader

        def slow_load() -> LoadedModel:
            gate.wait(timeout=30)
            return original()

        registry.apply([ModelSource("m", "2", slow_load, slow_source.batching)], {})
        # v2 is loading: v1 is no longer wanted, yet it is the one that answers.
        assert await _answer(registry, "m") == "1"
        assert [v.version for v in registry.describe("m")[0].versions] == ["1", "2"]
        gate.set()
        await wait_until_async(
            lambda: registry.resolve("m").model_version == "2", what="v2 to take over"
        )
        await wait_until_async(
            lambda: [v.version for v in registry.describe("m")[0].versions] == ["2"],
            what="v1 removed",
        )
        new.release.set()
        assert await _answer(registry, "m") == "2"
        await registry.close(5)

    _run(scenario)


def test_files_that_fail_to_load_leave_the_old_ones_serving_and_are_tried_once() -> None:
    backend = ControlledBackend()
    attempts: list[int] = []

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("m", "1", backend, fingerprint="a")], {})
        await wait_until_async(_serving(registry, "m"), what="v1")

        def broken() -> LoadedModel:
            attempts.append(1)
            raise ValueError("model.onnx: output 'logits' has 10 classes but there are 1000 labels")

        bad = ModelSource("m", "1", broken, BatchingConfig(), fingerprint="b")
        for _ in range(3):  # three polls see the same broken files
            registry.apply([bad], {})
        await wait_until_async(
            lambda: registry.describe("m")[0].versions[0].reload_error is not None, what="error"
        )
        (status,) = registry.describe("m")
        assert status.state is ModelState.READY and status.versions[0].state is ModelState.READY
        assert "10 classes" in (status.versions[0].reload_error or "")
        assert attempts == [1]  # the same files are not tried again and again
        assert await _answer(registry, "m") == "1"
        await registry.close(5)

    _run(scenario)


def test_a_broken_model_keeps_ready_503_and_a_fixed_one_serves() -> None:
    backend = ControlledBackend()

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply(
            [_source("good", "1", backend)], {"bad": "models/bad/model.yaml: unknown key 'x'"}
        )
        await wait_until_async(_serving(registry, "good"), what="good")
        with pytest.raises(ModelNotLoadedException, match="unknown key 'x'") as refusal:
            registry.check_ready()
        states = {m["name"]: m["state"] for m in refusal.value.extensions["models"]}  # type: ignore[attr-defined]
        assert states == {"bad": "UNAVAILABLE", "good": "READY"}
        with pytest.raises(ModelNotLoadedException, match="cannot be served"):
            registry.resolve("bad")
        registry.apply([_source("good", "1", backend), _source("bad", "1", backend)], {})
        await wait_until_async(_serving(registry, "bad"), what="the fixed model")
        assert registry.check_ready() is None  # several models, no default
        await registry.close(5)

    _run(scenario)


def test_a_removed_model_finishes_what_was_routed_to_it() -> None:
    backend = ControlledBackend(blocked=True)

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("m", "1", backend)], {})
        await wait_until_async(_serving(registry, "m"), what="m")
        routed = asyncio.ensure_future(_answer(registry, "m"))
        await wait_until_async(backend.entered.is_set, what="a request in the model")
        registry.apply([], {})
        with pytest.raises(ModelNotFoundException):
            registry.resolve("m")
        backend.release.set()
        assert await routed == "1"
        await registry.close(5)

    _run(scenario)


def test_ready_waits_for_every_version_found_at_start_but_not_for_later_ones() -> None:
    backend = ControlledBackend()
    gates = {"2": threading.Event(), "3": threading.Event()}

    def gated(version: str) -> ModelSource:
        plain = _source("m", version, backend)

        def load() -> LoadedModel:
            gates[version].wait(timeout=30)
            return plain.loader()

        return ModelSource("m", version, load, plain.batching, plain.spec)

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("m", "1", backend), gated("2")], {})
        await wait_until_async(_serving(registry, "m"), what="v1")
        with pytest.raises(ModelNotLoadedException, match="m version 2: LOADING"):
            registry.check_ready()  # a version the operator asked for is still loading
        gates["2"].set()
        await wait_until_async(lambda: _ready(registry), what="v2 and so the pod")
        registry.apply([_source("m", "1", backend), gated("2"), gated("3")], {})
        assert _ready(registry)  # a version added live does not take the pod out
        gates["3"].set()
        await wait_until_async(lambda: registry.resolve("m").model_version == "3", what="v3")
        await registry.close(5)

    _run(scenario)


def _gauge(metrics: Metrics, name: str, key: tuple[str, str]) -> float | None:
    labels = {"model_name": key[0], "model_version": key[1]}
    return metrics.registry.get_sample_value(name, labels)


def _batcher_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "batcher")


def _held(
    name: str, version: str, backend: ControlledBackend, gate: threading.Event
) -> ModelSource:
    plain = _source(name, version, backend)

    def load() -> LoadedModel:
        gate.wait(timeout=30)
        return plain.loader()

    return ModelSource(name, version, load, plain.batching, plain.spec)


def test_a_version_removed_while_it_loads_never_serves_nor_leaks() -> None:
    backend, gate = ControlledBackend(), threading.Event()

    async def scenario() -> None:
        registry, metrics = _registry()
        threads = _batcher_threads()
        registry.apply([_held("x", "1", backend, gate)], {})
        registry.apply([], {})  # removed while its load runs
        gate.set()
        await wait_until_async(lambda: not registry.names(), what="x gone")
        # The abandoned load finishes in its thread and lets go of its model.
        await wait_until_async(backend.closed.is_set, what="the abandoned load to finish")
        assert _batcher_threads() == threads  # no worker was started for it
        assert _gauge(metrics, "model_loaded", ("x", "1")) is None  # and no series left
        await registry.close(5)

    _run(scenario)


def test_the_serving_copy_owns_the_gauges_of_its_version() -> None:
    """A retiring copy (replaced, or removed and added again) never overwrites the
    gauges of the copy that serves the version now."""
    stuck, fresh = ControlledBackend(blocked=True), ControlledBackend(blocked=True)

    async def scenario() -> None:
        registry, metrics = _registry(retire_grace_seconds=30)
        registry.apply([_source("m", "1", stuck, fingerprint="a")], {})
        await wait_until_async(_serving(registry, "m"), what="m")
        old_request = asyncio.ensure_future(_answer(registry, "m"))
        await wait_until_async(stuck.entered.is_set, what="a request in the old copy")
        registry.apply([_source("m", "1", fresh, fingerprint="b")], {})
        await wait_until_async(
            lambda: registry.resolve("m").model.backend is fresh,  # type: ignore[union-attr]
            what="the new copy",
        )
        new_requests = [asyncio.ensure_future(_answer(registry, "m")) for _ in range(3)]
        await wait_until_async(
            lambda: registry.resolve("m").batcher.pending == 3,  # type: ignore[union-attr]
            what="3 in the new copy",
        )
        stuck.release.set()
        assert await old_request == "1"  # the old copy finished what it had
        await wait_until_async(stuck.closed.is_set, what="the old copy to close")
        assert _gauge(metrics, "inference_queue_size", ("m", "1")) == 3
        assert _gauge(metrics, "model_loaded", ("m", "1")) == 1
        fresh.release.set()
        await asyncio.gather(*new_requests)
        await registry.close(5)

    _run(scenario)


def test_a_model_added_live_does_not_take_the_pod_out_even_when_broken() -> None:
    backend = ControlledBackend()

    def broken() -> LoadedModel:
        raise ValueError("model.onnx: a bad graph")

    async def scenario() -> None:
        registry, _ = _registry()
        registry.apply([_source("m", "1", backend)], {})
        await wait_until_async(lambda: _ready(registry), what="m")
        registry.apply(
            [_source("m", "1", backend), ModelSource("z", "1", broken, BatchingConfig())], {}
        )
        await wait_until_async(
            lambda: registry.describe("z")[0].state is ModelState.UNAVAILABLE, what="z fails"
        )
        assert _ready(registry)  # /models says z is broken; the fleet keeps serving m
        await registry.close(5)

    _run(scenario)


def test_rolling_many_versions_keeps_the_exposition_and_the_registry_bounded() -> None:
    backend = ControlledBackend()

    async def scenario() -> None:
        registry, metrics = _registry(retire_grace_seconds=1)
        registry.apply([_source("m", "0", backend)], {})
        await wait_until_async(_serving(registry, "m"), what="v0")
        await _answer(registry, "m")
        lines = len(metrics.render(None)[0].splitlines())
        for version in range(1, 21):  # each poll sees only the newest version
            registry.apply([_source("m", str(version), backend)], {})
            await wait_until_async(partial(_serves_version, registry, str(version)), what="next")
            await _answer(registry, "m")
        await wait_until_async(
            lambda: len(registry.describe("m")[0].versions) == 1, what="old ones unloaded"
        )
        await wait_until_async(  # one version's series: the old ones' go with them
            lambda: len(metrics.render(None)[0].splitlines()) == lines,
            what="the exposition to shrink back to one version",
        )
        await registry.close(5)

    _run(scenario)


def test_a_load_whose_rescan_fails_leaves_the_model_unloaded() -> None:
    """An unloaded model stays pinned out when a load's rescan of the repository fails:
    the next poll must not bring it back unasked."""

    class Catalog:
        def __init__(self) -> None:
            self.failing = False

        async def read(self) -> CatalogReading:
            if self.failing:
                raise OSError("the repository vanished")
            return CatalogReading(sources=(_source("m", "1", ControlledBackend()),), errors={})

    async def main() -> None:
        registry, _ = _registry()
        catalog = Catalog()
        control = ModelControl(catalog, registry, get_logger())
        await control.refresh()
        await control.unload("m")
        catalog.failing = True
        with pytest.raises(OSError, match="vanished"):
            await control.load("m", 5.0)
        catalog.failing = False
        await control.refresh()  # the next poll
        assert registry.names() == []
        await registry.close(1.0)

    asyncio.run(main())
