"""What the gateway adds to the observability library's middleware (`golden_signals.Hooks`):
its problem+json 500, the 499 of a request whose client left, the refusal counter, and
its access line (a prediction's answer on its one line; the key's id, the model version)."""

from __future__ import annotations

from typing import Any

import structlog

from golden_signals.asgi import ASGIApp
from golden_signals.logs import log_request_complete
from golden_signals.middleware import Hooks, RequestRecord
from inference_gateway.api.problems import internal_error_response
from inference_gateway.errors import ClientClosedRequestException, InferenceGatewayException
from inference_gateway.observability.logging import InferenceLogFields, log_inference_complete
from inference_gateway.observability.metrics import Metrics

#: What the access line says of a request cancelled before its answer.
CANCELLED_DETAIL = "The request was cancelled before its answer: its client went away."


class GatewayHooks(Hooks):
    """The gateway's answers and access line, for every HTTP request."""

    def __init__(self, metrics: Metrics | None) -> None:
        """Count refusals in ``metrics`` (None: metrics off)."""
        self.metrics = metrics

    def error_response(self, request_id: str) -> ASGIApp:
        """The problem+json 500, with the request id."""
        return internal_error_response(request_id)

    def cancelled_error(self) -> BaseException:
        """A request whose client went away records `ClientClosedRequestException`."""
        return ClientClosedRequestException(CANCELLED_DETAIL)

    def finished(self, record: RequestRecord) -> None:
        """Count a refusal by its reason (``requests_rejected_total``)."""
        error = record.error
        if (
            self.metrics is not None
            and isinstance(error, InferenceGatewayException)
            and error.reject_reason
        ):
            self.metrics.record_rejection(error.reject_reason)

    def access_line(
        self, record: RequestRecord, logger: structlog.typing.FilteringBoundLogger
    ) -> None:
        """A prediction's one line with its answer, or the access line with the key's
        id, the model version and the error (a server-side failure's cause's traceback)."""
        state = record.scope["state"]
        error = record.error
        fields: dict[str, Any] = {}
        if record.sampled is not None:
            fields["trace_sampled"] = record.sampled
        key_id = state.get("api_key_id")  # the key's id, never the key
        if key_id is not None:
            fields["api_key_id"] = key_id
        model = state.get("model")  # the version a prediction route picked
        if isinstance(model, tuple):
            fields["model_name"], fields["model_version"] = model
        if error is not None:
            fields["error_type"] = type(error).__name__
            if isinstance(error, InferenceGatewayException):
                fields["error"] = error.detail
        unhandled = record.unhandled
        if unhandled is None and isinstance(error, InferenceGatewayException):
            # A server-side failure rendered as a problem: keep its cause's traceback.
            cause = error.__cause__ if not error.expected else None
            unhandled = cause if isinstance(cause, Exception) else None
        elif unhandled is None and isinstance(error, Exception):
            unhandled = error  # a bug a route answered itself (the protocol's own 500)
        inference = state.get("inference")
        duration_ms = record.duration_seconds * 1000
        if isinstance(inference, InferenceLogFields) and error is None and record.status < 400:
            log_inference_complete(
                logger, inference.model_name, inference.prediction_class,
                inference.confidence, duration_ms, method=record.method,
                endpoint=record.endpoint, status_code=record.status,
                inference_ms=inference.inference_ms, model_version=inference.model_version,
                batch_size=inference.batch_size,
                **{k: v for k, v in fields.items() if k in ("trace_sampled", "api_key_id")},
            )  # fmt: skip
            return
        expected = isinstance(error, InferenceGatewayException) and error.expected
        log_request_complete(
            logger, record.method, record.endpoint, record.status, duration_ms,
            exc_info=unhandled, expected=expected, **fields,
        )  # fmt: skip
