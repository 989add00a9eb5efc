"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), the twin of
``routes.py``: a thin codec at the edge.

`grpc_service` runs grpcio's asyncio server in the app's own process and event loop
(``GRPC_PORT``), with the service definition that tritonclient ships, so Triton's and
KServe's gRPC clients work unchanged. Every RPC decodes its message into "these images
or tensors for model M, version V" (`grpc_codec.py`), asks the same registry and
batchers as the REST routes through `inference.py` (same limits, admission, per-model
metrics and spans), and encodes the answer. Around each RPC: a server span continuing
the caller's W3C ``traceparent`` from the call's metadata, one access log line, and
``grpc_requests_total``/``grpc_request_duration_seconds``. Gateway errors become the
status code of their kind (`grpc_codec.STATUS_BY_KIND`) with their detail as message;
anything unexpected is INTERNAL with a generic message, its traceback on the access
line. The RPCs the gateway does not offer (shared memory, streaming, trace and log
settings) answer UNIMPLEMENTED.

Readiness answers as Triton does: ``ServerLive``, ``ServerReady`` and ``ModelReady``
say false (an unknown model is not ready) rather than failing the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tritonclient.grpc import service_pb2, service_pb2_grpc

from golden_signals.logs import RequestLogContext, log_request_complete
from golden_signals.middleware import request_id_from, sanitize_token
from golden_signals.sampling import Outcome
from golden_signals.tracing import TracedOperation, get_current_trace_id, set_span_error
from inference_gateway.api.admin import require_admin
from inference_gateway.api.keys import ApiKeys
from inference_gateway.api.limits import InflightBytes
from inference_gateway.api.v2 import grpc_codec, inference
from inference_gateway.config import Settings
from inference_gateway.errors import (
    ClientClosedRequestException,
    InferenceGatewayException,
    InferenceTimeoutException,
    TooManyCallsException,
)
from inference_gateway.inference.control import ModelControl
from inference_gateway.inference.host import ModelHost
from inference_gateway.inference.registry import ModelRegistry
from inference_gateway.observability.logging import InferenceLogFields, log_inference_complete
from inference_gateway.observability.telemetry import Telemetry

_DEFINITION = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
#: The service's full name, as in ``/inference.GRPCInferenceService/ModelInfer``.
SERVICE: str = _DEFINITION.full_name
#: Every RPC of the service definition.
RPCS: tuple[str, ...] = tuple(method.name for method in _DEFINITION.methods)
#: The RPCs the gateway answers, each with the servicer's method that does the work;
#: the others answer UNIMPLEMENTED.
OFFERED: dict[str, str] = {
    "ServerLive": "_server_live",  # can the process serve (false once a model failed for good)
    "ServerReady": "_server_ready",  # is every model ready (as /ready)
    "ModelReady": "_model_ready",  # does the model (version) serve; an unknown one does not
    "ServerMetadata": "_server_metadata",  # name, version, extensions
    "ModelMetadata": "_model_metadata",  # the model's inputs and outputs
    "ModelConfig": "_model_config",  # Triton's model configuration (as REST's /config)
    "ModelInfer": "_infer",  # images or tensors in; confidences or top classes out
    "ModelStatistics": "_statistics",  # the statistics extension, from the metrics
    "RepositoryIndex": "_repository_index",  # the repository's models (ADMIN_TOKEN)
    "RepositoryModelLoad": "_repository_load",  # serve a model of the repository (ADMIN_TOKEN)
    "RepositoryModelUnload": "_repository_unload",  # take a model out (ADMIN_TOKEN)
}
#: The RPCs open without an API key, and never refused for the calls in flight: probes.
#: (grpcio's own ``maximum_concurrent_rpcs`` is not set: it counts calls whose message
#: is still arriving, so slow uploads could fill it and turn the probes away.)
OPEN_RPCS = frozenset({"ServerLive", "ServerReady"})
#: The access line's ``method`` for every RPC.
ACCESS_METHOD = "gRPC"
#: Codes that are the server's failure, not the caller's: OpenTelemetry's RPC
#: conventions set a server span's status to ERROR for these only.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
#: How a call's status counts for tail sampling: the server's failures, its refusals and
#: deadlines keep the trace; the caller's mistakes do not.
OUTCOME_BY_CODE: dict[grpc.StatusCode, Outcome] = {
    grpc.StatusCode.INTERNAL: Outcome.ERROR,
    grpc.StatusCode.UNKNOWN: Outcome.ERROR,
    grpc.StatusCode.DATA_LOSS: Outcome.ERROR,
    grpc.StatusCode.UNAVAILABLE: Outcome.REFUSED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Outcome.REFUSED,
    grpc.StatusCode.DEADLINE_EXCEEDED: Outcome.TIMEOUT,
}
#: A call the client cancels this close to its deadline was cancelled by the deadline.
DEADLINE_SLACK_SECONDS = 0.1
#: What an unexpected failure tells the caller: nothing of the server's internals.
INTERNAL_MESSAGE = "Internal server error"

_PROPAGATOR = TraceContextTextMapPropagator()


class _NotOffered(Exception):  # noqa: N818 - a signal inside this module, not an error
    """An RPC of the service that the gateway does not implement."""


@dataclass(slots=True)
class _Call:
    """One RPC being served: its context, and what its access line will say."""

    context: Any  # grpc.aio.ServicerContext
    model: tuple[str, str] | None = None
    inference: InferenceLogFields | None = None
    request_id: str = ""
    trace_sampled: bool | None = None  # tail sampling's ruling (None: none made)


_Handler = Callable[[Any, _Call], Awaitable[Any]]


class InferenceServicer:
    """``inference.GRPCInferenceService`` over the app's registry, settings and telemetry.

    Each RPC of the service definition resolves (`__getattr__`) to its handler wrapped
    in `_serve`: the offered ones (`OFFERED`) to the method that does the work, every
    other one to an answer of UNIMPLEMENTED, so
    `add_GRPCInferenceServiceServicer_to_server` finds every method it registers. The
    generated base class is not used: its methods raise `NotImplementedError`, which
    grpcio logs with a traceback and reports with the exception's text; here an RPC not
    offered is an ordinary answer, with its access line and its count.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        control: ModelControl,
        settings: Settings,
        telemetry: Telemetry,
        keys: ApiKeys | None = None,
        inflight: InflightBytes | None = None,
    ) -> None:
        """Serve ``registry``'s models under ``settings``' limits, reporting to
        ``telemetry``; ``control`` answers the repository RPCs; with ``keys``, every
        call but the health ones needs an API key in its metadata. ``inflight`` is the
        worker's budget of payload bytes, shared with HTTP (by default its own)."""
        self._registry = registry
        self._control = control
        self._keys = keys
        self._settings = settings
        self._telemetry = telemetry
        self._inflight = inflight or InflightBytes(settings.max_inflight_bytes)
        self._max_calls = settings.effective_grpc_max_calls
        self._calls = 0  # calls being served now, probes aside

    def __getattr__(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        """The RPC ``name`` of the service, as grpcio calls it: ``(request, context)``."""
        if name not in RPCS:
            raise AttributeError(name)
        handler: _Handler = getattr(self, OFFERED[name]) if name in OFFERED else self._not_offered
        return partial(self._serve, name, handler)

    # --- what each RPC does -------------------------------------------------------------
    async def _server_live(self, request: Any, call: _Call) -> Any:
        return service_pb2.ServerLiveResponse(live=_holds(self._registry.check_live))

    async def _server_ready(self, request: Any, call: _Call) -> Any:
        return service_pb2.ServerReadyResponse(ready=_holds(self._registry.check_ready))

    async def _model_ready(self, request: Any, call: _Call) -> Any:
        def check() -> None:
            self._registry.resolve(request.name, request.version or None).check_ready()

        return service_pb2.ModelReadyResponse(ready=_holds(check))

    async def _server_metadata(self, request: Any, call: _Call) -> Any:
        return grpc_codec.server_metadata_response(inference.server_metadata(self._settings))

    async def _model_metadata(self, request: Any, call: _Call) -> Any:
        document = inference.model_metadata(self._registry, request.name, request.version or None)
        return grpc_codec.model_metadata_response(document)

    async def _model_config(self, request: Any, call: _Call) -> Any:
        document = inference.model_config(self._registry, request.name, request.version or None)
        return grpc_codec.model_config_response(document)

    async def _infer(self, request: Any, call: _Call) -> Any:
        settings = self._settings
        async with self._registry.lease(request.model_name, request.model_version or None) as host:
            call.model = host.key
            host.require_ready()
            deadline = self._deadline(call.context)
            host.check_admission(deadline)  # shed load before decoding
            size = grpc_codec.payload_bytes(request, inference.max_bytes_elements(settings))
            try:
                self._inflight.charge(size)
                return await self._answer(host, request, call, deadline)
            finally:
                self._inflight.release(size)

    async def _answer(self, host: ModelHost, request: Any, call: _Call, deadline: float) -> Any:
        """Decode, score and encode one inference call (its payload already charged)."""
        settings = self._settings
        decoded = await inference.decode(
            grpc_codec.typed_contents_bytes(request),
            partial(
                grpc_codec.decode_infer_request,
                request,
                max_elements=inference.max_elements(host, settings),
                max_bytes_elements=inference.max_bytes_elements(settings),
            ),
        )
        scored = await inference.run(host, decoded, settings, deadline)
        answered = inference.answer(host, decoded, scored)
        call.inference = answered.log
        return grpc_codec.encode_infer_response(
            model_name=host.model_name,
            model_version=host.model_version,
            request_id=decoded.id,
            outputs=answered.outputs,
        )

    async def _statistics(self, request: Any, call: _Call) -> Any:
        document = await inference.model_statistics(
            self._registry,
            self._telemetry.metrics,
            request.name or None,
            request.version or None,
        )
        return grpc_codec.model_statistics_response(document)

    async def _repository_index(self, request: Any, call: _Call) -> Any:
        require_admin(self._settings, _metadata(call.context).get("authorization"))
        models = inference.repository_index(self._control, ready_only=request.ready)
        return grpc_codec.repository_index_response(models)

    async def _repository_load(self, request: Any, call: _Call) -> Any:
        require_admin(self._settings, _metadata(call.context).get("authorization"))
        inference.check_load_parameters(request.parameters)
        remaining = self._deadline(call.context) - time.monotonic()
        await self._control.load(request.model_name, max(remaining, 0.0))
        return service_pb2.RepositoryModelLoadResponse()

    async def _repository_unload(self, request: Any, call: _Call) -> Any:
        require_admin(self._settings, _metadata(call.context).get("authorization"))
        await self._control.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    async def _not_offered(self, request: Any, call: _Call) -> Any:
        raise _NotOffered

    def _deadline(self, context: Any) -> float:
        """The call's deadline as a `time.monotonic` value: the caller's, capped by
        ``REQUEST_TIMEOUT``."""
        timeout = self._settings.request_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        return time.monotonic() + timeout

    # --- around every RPC ---------------------------------------------------------------
    async def _serve(self, rpc: str, handler: _Handler, request: Any, context: Any) -> Any:
        """Run one RPC inside its server span and log context; answer its status code,
        count it and write its one access line."""
        started = time.perf_counter()
        metadata = _metadata(context)
        call = _Call(context, request_id=request_id_from(metadata.get("x-request-id")))
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": rpc}
        code = grpc.StatusCode.OK
        error: BaseException | None = None
        response: Any = None
        cancelled: asyncio.CancelledError | None = None
        with (
            RequestLogContext(
                request_id=call.request_id,
                user_id=sanitize_token(metadata.get("x-user-id")),
                method=ACCESS_METHOD,
            ),
            TracedOperation(
                f"{SERVICE}/{rpc}",
                attributes,
                tracer=self._telemetry.tracer,
                context=_PROPAGATOR.extract(metadata),
                kind=SpanKind.SERVER,
            ) as span,
        ):
            probe = rpc in OPEN_RPCS  # never counted, never needs a key
            try:
                if not probe:
                    self._take_call()
                if self._keys is not None and not probe:
                    self._keys.identify(metadata.get("authorization"), metadata.get("x-api-key"))
                response = await handler(request, call)
            except InferenceGatewayException as exc:
                code, error = grpc_codec.status_code(exc), exc
            except _NotOffered as exc:
                code, error = grpc.StatusCode.UNIMPLEMENTED, exc
            except asyncio.CancelledError as exc:  # the caller went away, or its deadline passed
                cancelled = exc
                error = _why_cancelled(context)
                code = grpc_codec.status_code(error)
            except Exception as exc:
                code, error = grpc.StatusCode.INTERNAL, exc
            finally:
                if not probe:
                    self._calls -= 1
            duration = time.perf_counter() - started
            call.trace_sampled = self._decide(span, code, duration, metadata.get("traceparent"))
            self._finish(rpc, call, span, code, error, duration)
        if cancelled is not None:
            raise cancelled
        if code is not grpc.StatusCode.OK:
            await context.abort(code, _message(rpc, error, call.request_id))
        return response

    def _take_call(self) -> None:
        """Count a call being served (given back by the caller, refused or not).

        Raises:
            TooManyCallsException: The worker serves ``GRPC_MAX_CALLS`` calls already.
        """
        self._calls += 1
        if self._calls > self._max_calls:
            raise TooManyCallsException(
                f"The worker serves {self._max_calls} calls already (GRPC_MAX_CALLS); "
                "retry shortly."
            )

    def _decide(
        self, span: Span, code: grpc.StatusCode, duration: float, traceparent: str | None
    ) -> bool | None:
        """Tail sampling's ruling on the call's trace (None under head sampling)."""
        tail = self._telemetry.tail
        if tail is None:
            return None
        return tail.decide(span, OUTCOME_BY_CODE.get(code, Outcome.OK), duration, traceparent)

    def _finish(
        self,
        rpc: str,
        call: _Call,
        span: Span,
        code: grpc.StatusCode,
        error: BaseException | None,
        duration: float,
    ) -> None:
        """Record the RPC on its span and in the metrics, and write its access line."""
        number = code.value[0]
        span.set_attribute("rpc.grpc.status_code", number)
        if error is not None and code in SERVER_FAULTS:
            set_span_error(error, span)
        metrics = self._telemetry.metrics
        if metrics is not None:
            # An exemplar names a trace only when that trace is exported: kept by tail
            # sampling, or (no ruling: head sampling) sampled by its span's flag.
            kept = call.trace_sampled
            if kept is None:
                kept = span.get_span_context().trace_flags.sampled
            trace_id = get_current_trace_id() if kept else None
            metrics.record_grpc_request(rpc, code.name, duration, trace_id)
            if isinstance(error, InferenceGatewayException) and error.reject_reason:
                metrics.record_rejection(error.reject_reason)
        endpoint = f"/{SERVICE}/{rpc}"
        logger = self._telemetry.logger
        sampled = {} if call.trace_sampled is None else {"trace_sampled": call.trace_sampled}
        if call.inference is not None and error is None:
            fields = call.inference
            log_inference_complete(
                logger, fields.model_name, fields.prediction_class, fields.confidence,
                duration * 1000, method=ACCESS_METHOD, endpoint=endpoint, status_code=number,
                inference_ms=fields.inference_ms, model_version=fields.model_version,
                batch_size=fields.batch_size, **sampled,
            )  # fmt: skip
            return
        extra: dict[str, Any] = dict(sampled)
        if call.model is not None:
            extra["model_name"], extra["model_version"] = call.model
        unhandled: BaseException | None = None
        if isinstance(error, InferenceGatewayException):
            extra["error_type"], extra["error"] = type(error).__name__, error.detail
            cause = error.__cause__ if not error.expected else None
            unhandled = cause if isinstance(cause, Exception) else None
        elif isinstance(error, _NotOffered):
            extra["error_type"], extra["error"] = "Unimplemented", f"{rpc} is not offered."
        elif error is not None:
            extra["error_type"], unhandled = type(error).__name__, error
        if error is None:
            level = logging.INFO
        elif unhandled is not None or code is grpc.StatusCode.INTERNAL:
            level = logging.ERROR
        else:
            level = logging.WARNING
        log_request_complete(
            logger, ACCESS_METHOD, endpoint, number, duration * 1000,
            exc_info=unhandled, level=level, **extra,
        )  # fmt: skip


def _holds(check: Callable[[], object]) -> bool:
    """Whether ``check`` passes: the gateway's errors say no."""
    try:
        check()
    except InferenceGatewayException:
        return False
    return True


def _metadata(context: Any) -> dict[str, str]:
    """The call's text metadata (binary ``-bin`` entries left out)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _why_cancelled(context: Any) -> InferenceGatewayException:
    """A call cancelled under the servicer: its deadline passed, or the caller left.

    A client's deadline passes a moment before the server's (which began when the call
    arrived), and the client then cancels the call: a cancellation within
    `DEADLINE_SLACK_SECONDS` of the deadline is the deadline's.
    """
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
        return InferenceTimeoutException("The call's deadline passed before its answer was ready.")
    return ClientClosedRequestException("The client cancelled the call.")


def _message(rpc: str, error: BaseException | None, request_id: str) -> str:
    """The status message: a gateway error's detail, nothing of an unexpected one."""
    if isinstance(error, InferenceGatewayException):
        return error.detail
    if isinstance(error, _NotOffered):
        return f"{rpc} is not offered by this server."
    return f"{INTERNAL_MESSAGE} (request id {request_id})."


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """grpcio's options: messages up to ``MAX_BODY_BYTES``; the port shared between the
    workers of one server (``WORKERS`` above 1, or 0 on a machine with several cores)."""
    shared = settings.effective_workers > 1
    return [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.so_reuseport", 1 if shared else 0),
    ]


@asynccontextmanager
async def grpc_service(
    settings: Settings,
    registry: ModelRegistry,
    control: ModelControl,
    telemetry: Telemetry,
    keys: ApiKeys | None = None,
    inflight: InflightBytes | None = None,
) -> AsyncIterator[Callable[[], None]]:
    """Serve the gRPC service on ``HOST:GRPC_PORT`` in this event loop until the block
    ends; then stop taking calls and let those in flight finish within
    ``GRACEFUL_SHUTDOWN_SECONDS``. Yields what stops it taking calls sooner (when the
    HTTP listener closes, at a stop), the grace period starting then.

    Messages are limited to ``MAX_BODY_BYTES``. With several workers each binds the
    port (``SO_REUSEPORT``) and the kernel spreads connections over them; with one, a
    port already taken fails the start.

    Raises:
        RuntimeError: The port cannot be bound.
    """
    assert settings.grpc_port is not None  # noqa: S101 - the caller checks
    server = grpc.aio.server(options=server_options(settings))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(registry, control, settings, telemetry, keys, inflight), server
    )
    address = _address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(
            f"GRPC_PORT: cannot listen on {address}; is another process using the port?"
        ) from exc
    await server.start()
    if telemetry.metrics is not None:
        telemetry.metrics.initialise_grpc()
    telemetry.logger.info("gRPC service listening", address=address, service=SERVICE)
    stopping: list[asyncio.Task[None]] = []

    def stop_taking_calls() -> None:
        """Refuse new calls from now on; those in flight get the grace period."""
        if not stopping:
            stopping.append(asyncio.ensure_future(server.stop(settings.graceful_shutdown_seconds)))

    try:
        yield stop_taking_calls
    finally:
        stop_taking_calls()
        await stopping[0]
        telemetry.logger.info("gRPC service stopped", address=address)
