"""`create_app`: the one place that wires settings, telemetry, model and routes together."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from golden_signals.logs import get_logger
from golden_signals.middleware import ObservabilityMiddleware
from golden_signals.sampling import KEEP_REASONS, TailSampling
from golden_signals.tracing import (
    SPAN_DROP_REASONS,
    get_tracer,
    head_sampler,
    otlp_http_exporter,
    setup_tracing,
)
from inference_gateway.api.access import GatewayHooks
from inference_gateway.api.edge import PROTOCOL_ERROR_REASONS, Connections, ProtocolErrors
from inference_gateway.api.keys import ApiKeyMiddleware, ApiKeys, KeysFileError, needs_key
from inference_gateway.api.limits import BodySizeLimitMiddleware, InflightBytes
from inference_gateway.api.openapi import install_openapi
from inference_gateway.api.problems import install_error_handlers
from inference_gateway.api.routes import (
    metrics_endpoint,
    predict,
    predict_model,
    predict_version,
    router,
)
from inference_gateway.api.shedding import LoadShedder, door_routes
from inference_gateway.api.ui import install_ui
from inference_gateway.api.v2.routes import infer
from inference_gateway.api.v2.routes import router as v2_router
from inference_gateway.config import ConfigError, Settings
from inference_gateway.errors import gateway_exception_names
from inference_gateway.inference.catalog import BuiltinCatalog, RepositoryCatalog
from inference_gateway.inference.control import ModelControl
from inference_gateway.inference.host import LoadRetry
from inference_gateway.inference.model import ModelLoader
from inference_gateway.inference.preprocess import (
    DECODE_FAILURE_REASONS,
    ImageLimits,
    harden_pillow,
)
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.inference.workers import WorkerReadiness
from inference_gateway.observability.logging import LOGGER_NAME, setup_logging
from inference_gateway.observability.metrics import Metrics, serve_metrics_port
from inference_gateway.observability.telemetry import UNTRACED_PATHS, Telemetry
from inference_gateway.shutdown import ShutdownSteps, stop_on_signals


def _tracer_provider(
    settings: Settings,
    exporter: SpanExporter | None,
    processors: tuple[SpanProcessor, ...],
    metrics: Metrics | None,
) -> tuple[TracerProvider | None, TailSampling | None]:
    """The span pipeline (None with tracing off) and its tail-sampling rule (None under
    head sampling)."""
    if not settings.enable_tracing or settings.otel_sdk_disabled:
        return None, None
    if exporter is None:
        endpoint = settings.otel_exporter_otlp_traces_endpoint
        if endpoint is None and settings.otel_exporter_otlp_endpoint:
            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        if endpoint is not None:
            exporter = otlp_http_exporter(endpoint)

    def tail(downstream: Sequence[SpanProcessor], provider: TracerProvider) -> TailSampling:
        return TailSampling(
            downstream,
            ratio=settings.trace_sample_ratio,
            slow_seconds=settings.trace_slow_seconds,
            refused_per_second=settings.trace_refused_per_second,
            wanted_per_second=settings.trace_low_confidence_per_second,
            resource=provider.resource,
            ids=provider.id_generator,
            scope_name=LOGGER_NAME,
            on_kept=metrics.record_trace_kept if metrics is not None else None,
        )

    return setup_tracing(
        service_name=settings.app_name,
        service_version=settings.app_version,
        environment=settings.environment.value,
        exporter=exporter,
        processors=processors,
        on_span_outcome=metrics.record_span_outcome if metrics is not None else None,
        tail=tail if settings.tail_sampling else None,
        sampler=(
            None
            if settings.otel_traces_sampler is None
            else head_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg)
        ),
    )


async def _shutdown_tracing(provider: TracerProvider, budget_seconds: float) -> None:
    """Flush and stop the span pipeline, waiting at most ``budget_seconds``.

    Both steps can block in an export to a collector that never answers (the SDK's
    ``force_flush`` exports on the calling thread and does not honour its timeout while
    the exporter waits), so they run on a daemon thread that we wait for only so long.
    """

    def flush_then_stop() -> None:
        provider.force_flush(int(budget_seconds * 1000))
        provider.shutdown()

    stopper = threading.Thread(target=flush_then_stop, name="span-shutdown", daemon=True)
    stopper.start()
    await asyncio.to_thread(stopper.join, budget_seconds)


def _registry(settings: Settings, telemetry: Telemetry) -> ModelRegistry:
    """The model registry with the settings' limits, retry policy and peers."""
    return ModelRegistry(
        telemetry,
        limits=ImageLimits(settings.max_image_pixels, settings.max_image_side),
        preprocess_workers=settings.effective_preprocess_workers,
        warmup=settings.model_warmup,
        stall_seconds=settings.model_stall_seconds,
        load_retry=LoadRetry(
            settings.model_load_retry_seconds, settings.model_load_retry_max_seconds
        ),
        peers=(
            WorkerReadiness(settings.worker_state_dir, settings.effective_workers)
            if settings.worker_state_dir is not None and settings.effective_workers > 1
            else None
        ),
        default_model=settings.default_model,
        retire_grace_seconds=settings.graceful_shutdown_seconds,
        private_paths=[
            form
            for path in (settings.model_repository, settings.model_cache_dir)
            if path is not None
            for form in (path.absolute(), path.resolve())
        ],
    )


def _api_keys(settings: Settings, telemetry: Telemetry) -> ApiKeys | None:
    """The API keys of ``API_KEYS_FILE`` (None: no key needed); a later change that
    cannot be read is logged and counted through ``telemetry``.

    Raises:
        ConfigError: The file cannot be read or has a malformed line.
    """
    if settings.api_keys_file is None:
        return None
    try:
        return ApiKeys(settings.api_keys_file, telemetry.logger, telemetry.metrics)
    except (OSError, KeysFileError) as exc:
        raise ConfigError(f"API_KEYS_FILE: {exc}") from exc


def _catalog(settings: Settings, loader: ModelLoader | None) -> BuiltinCatalog | RepositoryCatalog:
    """The models to serve: a test's loader, a model repository, or the built-in model."""
    if loader is None and settings.model_repository is not None:
        return RepositoryCatalog(settings.model_repository, settings)
    return BuiltinCatalog(settings, loader)


@asynccontextmanager
async def _grpc_serving(
    settings: Settings,
    registry: ModelRegistry,
    control: ModelControl,
    telemetry: Telemetry,
    keys: ApiKeys | None,
    inflight: InflightBytes,
) -> AsyncIterator[Callable[[], None]]:
    """Serve the gRPC service too when ``GRPC_PORT`` is set, until the block ends;
    yields what makes it stop taking calls (nothing without gRPC)."""
    if settings.grpc_port is None:
        yield lambda: None
        return
    # Imported only now: grpcio and tritonclient come with the `grpc` extra.
    from inference_gateway.api.v2.grpc import grpc_service

    async with grpc_service(
        settings, registry, control, telemetry, keys, inflight
    ) as stop_taking_calls:
        yield stop_taking_calls


@asynccontextmanager
async def _serving(
    control: ModelControl,
    registry: ModelRegistry,
    settings: Settings,
    logger: structlog.typing.FilteringBoundLogger,
) -> AsyncIterator[None]:
    """Serve the catalog's models (rescanning a repository when asked) until the block
    ends, then drain and unload them."""
    await control.refresh()
    polled = isinstance(control.catalog, RepositoryCatalog)
    try:
        async with control.polling(settings.model_repository_poll_seconds if polled else 0):
            yield
    finally:
        logger.info("Shutting down")
        registry.begin_drain()
        # Loads still running or retrying are not waited for.
        await registry.close(settings.graceful_shutdown_seconds)


def _add_routes(app: FastAPI, settings: Settings, metrics: Metrics | None) -> None:
    """The error handlers, the API, ``/metrics`` (unless on its own port) and the page."""
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(v2_router)
    if metrics is not None and settings.metrics_port is None:
        app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    if settings.enable_ui:
        install_ui(app, settings)


def _add_middleware(
    app: FastAPI,
    settings: Settings,
    telemetry: Telemetry,
    protocol_errors: ProtocolErrors,
    keys: ApiKeys | None,
    inflight: InflightBytes,
) -> None:
    """Wrap the routes: observability with the server span outermost, then CORS, API keys,
    and the body limits."""
    provider = telemetry.tracer_provider
    # Middleware added last runs first.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        inflight=inflight,
        body_timeout=settings.request_body_timeout,
        errors=protocol_errors,
    )
    if keys is not None:  # runs before the body limits: no key, no upload read
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Server-Timing", "traceparent"],
        )
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=telemetry.metrics,
        logger=telemetry.logger,
        tail=telemetry.tail,
        hooks=GatewayHooks(telemetry.metrics),
        tracer=telemetry.tracer if provider is not None else None,
        untraced=UNTRACED_PATHS,
        trace_header=True,  # callers read their trace (and whether it was kept) from it
    )


def _start_metrics(metrics: Metrics | None, host: str, port: int | None) -> Callable[[], None]:
    """Start what the metrics need while the app serves: the HTTP families' publication
    for the other workers (with several), and the metrics on their own ``port`` when
    set. Returns what stops them: the port closed, the last values published, this
    worker's live gauges dropped."""
    if metrics is None:
        return lambda: None
    metrics.families.registry.start()
    stop_port = serve_metrics_port(metrics.registry, host, port) if port is not None else None

    def stop() -> None:
        if stop_port is not None:
            stop_port()
        metrics.families.registry.close()
        metrics.mark_process_dead(os.getpid())

    return stop


def create_app(
    settings: Settings | None = None,
    *,
    model_loader: ModelLoader | None = None,
    span_exporter: SpanExporter | None = None,
    span_processors: tuple[SpanProcessor, ...] = (),
    configure_logging: bool = True,
) -> FastAPI:
    """Build a gateway app; everything stateful is created here and kept on ``app.state``.

    ``model_loader`` replaces the configured model (tests use a slow or failing one);
    ``span_exporter``/``span_processors`` replace or add span pipelines (tests use
    in-memory ones). Logging is process-wide: pass ``configure_logging=False`` to keep
    the caller's.
    """
    settings = settings if settings is not None else Settings()
    logger = get_logger()
    metrics = (
        Metrics(
            app_name=settings.app_name,
            app_version=settings.app_version,
            environment=settings.environment.value,
            multiprocess_dir=settings.prometheus_multiproc_dir,
        )
        if settings.enable_metrics
        else None
    )
    provider, tail = _tracer_provider(settings, span_exporter, span_processors, metrics)
    telemetry = Telemetry(
        metrics=metrics,
        tracer_provider=provider,
        tracer=tail.tracer if tail is not None else get_tracer(provider, LOGGER_NAME),
        logger=logger,
        tail=tail,
    )
    registry = _registry(settings, telemetry)
    protocol_errors = ProtocolErrors(telemetry)
    keys = _api_keys(settings, telemetry)
    inflight = InflightBytes(settings.max_inflight_bytes)  # HTTP bodies and gRPC messages
    control = ModelControl(_catalog(settings, model_loader), registry, logger)
    if metrics is not None:
        metrics.initialise_series(
            exception_types=gateway_exception_names(),
            decode_failure_reasons=DECODE_FAILURE_REASONS,
            span_drop_reasons=SPAN_DROP_REASONS if provider is not None else (),
            trace_keep_reasons=KEEP_REASONS if tail is not None else (),
            protocol_error_reasons=PROTOCOL_ERROR_REASONS,
        )
    # With several workers, `inference-gateway serve` serves METRICS_PORT from the parent.
    own_metrics_port = (
        settings.metrics_port
        if metrics is not None and settings.prometheus_multiproc_dir is None
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if configure_logging:
            setup_logging(
                settings.log_level.value,
                settings.effective_log_format.value,
                traceback_locals=settings.log_traceback_locals,
            )
        harden_pillow()
        logger.info(
            "Starting",
            app_name=settings.app_name,
            app_version=settings.app_version,
            environment=settings.environment.value,
            model_name=settings.model_name,
            tracing=provider is not None,
            metrics=metrics is not None,
        )
        stop_metrics = _start_metrics(metrics, settings.host, own_metrics_port)
        listeners: list[Callable[[], None]] = []  # what stops taking calls with HTTP

        def stop_listening() -> None:
            for stop in listeners:
                stop()

        restore_signals = stop_on_signals(
            ShutdownSteps(
                stop_ready=registry.begin_shutdown,
                stop_listening=stop_listening,
                expire=registry.expire,
            ),
            settings.shutdown_delay_seconds,
            settings.graceful_shutdown_seconds,
        )
        try:
            # Exited in reverse: the gRPC service stops (its calls in flight finish)
            # before the registry drains and unloads the models.
            async with (
                _serving(control, registry, settings, logger),
                _grpc_serving(settings, registry, control, telemetry, keys, inflight) as stop_grpc,
            ):
                listeners.append(stop_grpc)
                yield
        finally:
            restore_signals()
            app.state.shedder.log_tally()  # the last second's refusals at the door
            await asyncio.to_thread(stop_metrics)
            if provider is not None:
                await _shutdown_tracing(provider, settings.trace_flush_timeout_seconds)

    app = FastAPI(
        title="inference-gateway",
        version=settings.app_version,
        summary="Image classification with metrics, logs and traces.",
        lifespan=lifespan,
        docs_url="/docs" if settings.enable_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.enable_docs else None,
    )
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.registry = registry
    app.state.control = control
    app.state.api_keys = keys
    # Reported from below the router too: the HTTP protocol finds it here.
    app.state.protocol_errors = protocol_errors
    app.state.connections = Connections(telemetry, settings.effective_max_connections)
    _add_routes(app, settings, metrics)
    # Under overload the HTTP protocol refuses at the door what admission would refuse.
    # The routes in the order the app tries them (`_add_routes`; those added after the
    # two routers come later and cannot take a request from them).
    app.state.shedder = LoadShedder(
        door_routes(
            [*router.routes, *v2_router.routes],
            predict=(predict, predict_model, predict_version),
            infer=(infer,),
        ),
        registry, settings, telemetry, keys,
    )  # fmt: skip
    _add_middleware(app, settings, telemetry, protocol_errors, keys, inflight)
    install_openapi(app, needs_key if keys is not None else None)
    return app
