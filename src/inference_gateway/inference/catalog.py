"""Where the served models come from: the built-in model, or a model repository.

A catalog reads, on demand, the list of model versions to serve (`ModelSource`s) and
the models whose configuration is broken; `ModelRegistry.apply` makes the served set
match it. Reading a repository touches only configuration files, never a model's
weights: loading happens in the registry's hosts, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from inference_gateway.config import Settings, usable_cores
from inference_gateway.inference.backends import OnnxRuntimeBackend, WideWhenIdle
from inference_gateway.inference.host import BatchingConfig
from inference_gateway.inference.model import LoadedModel, ModelLoader, load_configured_model
from inference_gateway.inference.onnx_export import BUILTIN_REPOSITORY, export_to_repository
from inference_gateway.inference.quality import (
    REFERENCE_FILE,
    Reference,
    ReferenceError,
    load_reference,
)
from inference_gateway.inference.registry import ModelSource
from inference_gateway.inference.repository import (
    BatchingOverrides,
    ModelConfigError,
    RepositoryScan,
    TensorInfo,
    VersionSource,
    confined_tree,
    fed_spec,
    resolve_io,
    scan_repository,
)
from inference_gateway.inference.workers import PassBoardSlot


@dataclass(frozen=True, slots=True)
class CatalogReading:
    """What a catalog holds now."""

    sources: tuple[ModelSource, ...]
    errors: Mapping[str, str]  # model name -> why it cannot be served
    warnings: tuple[str, ...] = ()


def default_batching(settings: Settings) -> BatchingConfig:
    """The server-wide batching settings (``MAX_BATCH_SIZE`` and friends)."""
    return BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_batch_delay_seconds=settings.max_batch_delay_ms / 1000,
        max_queue_size=settings.max_queue_size,
        max_queue_wait_seconds=settings.max_queue_wait_seconds,
    )


def load_builtin(settings: Settings) -> LoadedModel:
    """The built-in model, loaded the way every repository model is.

    On ONNX Runtime (the default) it is exported once into a model repository under
    ``MODEL_CACHE_DIR`` (`export_to_repository`), read back with `scan_repository` and
    opened with `load_version`: one code path for the built-in model and users'
    models. ``MODEL_BACKEND=torch`` runs the eager module instead.
    """
    if settings.model_backend.value != "onnxruntime":
        return load_configured_model(settings)
    root = settings.model_cache_dir / BUILTIN_REPOSITORY
    export_to_repository(
        root, settings.model_cache_dir, name=settings.model_name, version=settings.model_version
    )
    entry = scan_repository(root).models.get(settings.model_name)
    if entry is None or entry.error is not None:
        raise ModelConfigError(entry.error if entry is not None else f"{root}: no built-in model")
    for version in entry.versions:
        if version.spec.version == settings.model_version:
            return load_version(version, settings.effective_model_threads, wide_when_idle(settings))
    raise ModelConfigError(f"{root / settings.model_name}: no version {settings.model_version}")


class BuiltinCatalog:
    """The one model the gateway was born with (or the one a test injects)."""

    def __init__(self, settings: Settings, loader: ModelLoader | None = None) -> None:
        """Serve ``loader``'s model, by default the built-in one (`load_builtin`)."""
        self._source = ModelSource(
            name=settings.model_name,
            version=settings.model_version,
            loader=loader or partial(load_builtin, settings),
            batching=default_batching(settings),
        )

    async def read(self) -> CatalogReading:
        """Always the same single model."""
        return CatalogReading(sources=(self._source,), errors={})


class RepositoryCatalog:
    """Every model in a model repository directory (``MODEL_REPOSITORY``)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        """Read ``root`` with the server's defaults for what a model leaves unset."""
        self.root = root
        self._settings = settings

    async def read(self) -> CatalogReading:
        """Scan the directory (off the event loop) into sources and errors."""
        scan = await asyncio.to_thread(scan_repository, self.root)
        return repository_reading(scan, self._settings)


def repository_reading(scan: RepositoryScan, settings: Settings) -> CatalogReading:
    """Turn a repository scan into model sources, with the server's defaults."""
    sources: list[ModelSource] = []
    errors: dict[str, str] = {}
    for name, entry in scan.models.items():
        if entry.error is not None:
            errors[name] = entry.error
            continue
        for version in entry.versions:
            sources.append(
                ModelSource(
                    name=name,
                    version=version.spec.version,
                    loader=partial(
                        load_version,
                        version,
                        settings.effective_model_threads,
                        wide_when_idle(settings),
                    ),
                    batching=_batching(version.batching, settings),
                    spec=version.spec,
                    fingerprint=version.fingerprint,
                )
            )
    return CatalogReading(tuple(sources), errors, tuple(scan.warnings))


def _batching(overrides: BatchingOverrides, settings: Settings) -> BatchingConfig:
    default = default_batching(settings)
    delay_ms = overrides.max_batch_delay_ms
    return BatchingConfig(
        max_batch_size=overrides.max_batch_size or default.max_batch_size,
        max_batch_delay_seconds=(
            delay_ms / 1000 if delay_ms is not None else default.max_batch_delay_seconds
        ),
        max_queue_size=overrides.max_queue_size or default.max_queue_size,
        max_queue_wait_seconds=default.max_queue_wait_seconds,
    )


def wide_when_idle(settings: Settings) -> WideWhenIdle | None:
    """Every usable core for a forward pass that finds no other running on the machine.

    Only where the workers share a state directory (``serve`` with several workers):
    there the board of running passes (`PassBoardSlot`) says whether a pass is alone.
    None (one session, ``MODEL_THREADS`` threads) when ``MODEL_WIDE_WHEN_IDLE`` is off,
    or when a worker's threads already cover every core (one worker).
    """
    directory = settings.worker_state_dir
    if not settings.model_wide_when_idle or directory is None:
        return None
    cores = usable_cores()
    if cores <= settings.effective_model_threads:
        return None
    return WideWhenIdle(threads=cores, passes=partial(PassBoardSlot, directory))


def load_version(
    source: VersionSource, threads: int, wide: WideWhenIdle | None = None
) -> LoadedModel:
    """Open one repository version on ONNX Runtime and check it against its graph.

    ``wide``: also a session on every core for passes that run alone (`WideWhenIdle`).
    Raises `ModelConfigError` (a ``ValueError``: not retried) when the graph does not
    fit the configuration, naming the file and the problem, and when a file of the
    version now leads out of the repository (`confined_tree`: the scan checked it, but
    a missing graph may since have appeared as a link).
    """
    if source.repository is not None:
        confined_tree(source.repository, source.path.parent)
    if not source.path.is_file():
        raise FileNotFoundError(f"{source.path}: no such file")
    try:
        backend = OnnxRuntimeBackend(source.path, threads, wide)
    except Exception as exc:  # ONNX Runtime's own exception types
        if isinstance(exc, OSError):
            raise
        raise ModelConfigError(f"{source.path}: ONNX Runtime cannot open it: {exc}") from exc
    try:
        inputs = [TensorInfo(*tensor) for tensor in backend.inputs]
        outputs = [TensorInfo(*tensor) for tensor in backend.outputs]
        input_name, output_name = resolve_io(source, inputs, outputs)
        spec = fed_spec(source, inputs)
        backend.select(input_name, output_name)
        reference, reference_error = _reference_of(source)
    except BaseException:
        backend.close()
        raise
    return LoadedModel(
        spec=spec,
        backend=backend,
        input_name=input_name,
        output_name=output_name,
        reference=reference,
        reference_error=reference_error,
    )


def _reference_of(source: VersionSource) -> tuple[Reference | None, str | None]:
    """The version's ``reference.json`` checked against its model file and labels, or
    why it is not used (the version serves either way; only its quality signals are off)."""
    try:
        reference = load_reference(source.path.parent, source.path)
    except ReferenceError as exc:
        return None, str(exc)
    if reference is None:
        return None, None
    unknown = sorted(reference.seen_classes - set(source.spec.labels))
    if unknown:
        return None, (
            f"{REFERENCE_FILE} names classes the model's labels do not have "
            f"({', '.join(unknown[:3])}): the labels changed; run `inference-gateway "
            "profile` again for this version"
        )
    return reference, None
