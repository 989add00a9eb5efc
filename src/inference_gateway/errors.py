"""What can go wrong, said without any protocol: the gateway's exception hierarchy.

Code anywhere raises one of these. Each says *what* went wrong: a coarse `ErrorKind`
that every protocol can map (invalid input, not found, unavailable, refused, timeout,
cancelled, internal), a stable machine-readable ``slug``, a bounded ``reject_reason``
for refusals the service makes to protect itself, and a retry hint. How an answer
looks on the wire (problem+json and HTTP statuses, the Open Inference Protocol's
error body, gRPC status codes) is decided in ``api/``, one codec per protocol; this
module imports nothing of HTTP.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """The protocol-neutral class of a failure: what a client should do about it."""

    INVALID_INPUT = "invalid_input"  # fix the request; retrying it unchanged fails again
    NOT_FOUND = "not_found"  # the named thing (a model, a version) does not exist
    UNAVAILABLE = "unavailable"  # not serving now (loading, draining, stalled): go elsewhere
    REFUSED = "refused"  # refused to protect the service (overload, limits): back off
    TIMEOUT = "timeout"  # a deadline passed
    CANCELLED = "cancelled"  # the client went away
    INTERNAL = "internal"  # the server failed; the client did nothing wrong
    UNAUTHENTICATED = "unauthenticated"  # no valid credential: send one
    FORBIDDEN = "forbidden"  # not allowed on this server, whatever the credential


class InferenceGatewayException(Exception):  # noqa: N818 - the specification's name
    """Base of every error the gateway reports to a client.

    Subclasses fix the `ErrorKind`, a stable machine-readable ``slug`` and a title;
    the instance carries a human-readable ``detail``. ``reject_reason`` (a bounded
    value) is set for refusals the service makes to protect itself, so they are
    counted as overload, not as failures; ``retry_after_seconds`` is the hint a
    protocol passes on (HTTP's ``Retry-After``).
    """

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    reject_reason: ClassVar[str | None] = None
    retry_after_seconds: ClassVar[int | None] = None

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.title
        #: Machine-readable facts a protocol may add to its answer (``/ready``'s
        #: ``models``), beyond the detail.
        self.extensions: dict[str, object] = {}
        super().__init__(self.detail)

    @property
    def expected(self) -> bool:
        """Anything but a server failure (a client error, a refusal, a deadline): part
        of normal operation, logged at WARNING and recorded on spans without a stack
        trace."""
        return self.kind is not ErrorKind.INTERNAL


class ModelNotLoadedException(InferenceGatewayException):
    """The model is not loaded and warmed yet (or a failed load waits to be retried, or
    another worker of the server is not ready)."""

    kind = ErrorKind.UNAVAILABLE
    slug = "model-not-ready"
    title = "Model not ready"
    reject_reason = "not_ready"
    retry_after_seconds = 5


class ModelNotFoundException(InferenceGatewayException):
    """The request names a model or a version the gateway does not serve."""

    kind = ErrorKind.NOT_FOUND
    slug = "model-not-found"
    title = "Model not found"


class InvalidInputException(InferenceGatewayException):
    """The request is well-formed HTTP but its content cannot be used."""

    kind = ErrorKind.INVALID_INPUT
    slug = "invalid-input"
    title = "Invalid input"


class InvalidImageException(InvalidInputException):
    """The payload is not a decodable image; ``reason`` is a bounded metric label."""

    slug = "invalid-image"
    title = "Invalid image"

    def __init__(self, detail: str, reason: str) -> None:
        self.reason = reason
        super().__init__(detail)


class ImageTooLargeException(InvalidImageException):
    """The image's dimensions exceed the configured pixel or side limits."""

    slug = "image-too-large"
    title = "Image too large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason="too_large")


class ModelStalledException(InferenceGatewayException):
    """A forward pass has run for longer than ``MODEL_STALL_SECONDS`` (``/ready`` only)."""

    kind = ErrorKind.UNAVAILABLE
    slug = "model-stalled"
    title = "Model stalled"
    reject_reason = "model_stalled"
    retry_after_seconds = 5


class ModelFailedException(InferenceGatewayException):
    """The model's worker stopped after crashing again and again; only a restart helps."""

    kind = ErrorKind.UNAVAILABLE
    slug = "model-failed"
    title = "Model failed"
    reject_reason = "model_failed"
    retry_after_seconds = 5


class RequestTimeoutException(InferenceGatewayException):
    """The request body did not arrive within ``REQUEST_BODY_TIMEOUT`` (a slow client)."""

    kind = ErrorKind.TIMEOUT
    slug = "request-timeout"
    title = "Request timeout"


class InferenceTimeoutException(InferenceGatewayException):
    """The request's deadline passed before its prediction was ready."""

    kind = ErrorKind.TIMEOUT
    slug = "timeout"
    title = "Inference timed out"
    reject_reason = "deadline_exceeded"


class QueueFullException(InferenceGatewayException):
    """The inference queue is full; the request was refused without waiting."""

    kind = ErrorKind.REFUSED
    slug = "queue-full"
    title = "Inference queue full"
    reject_reason = "queue_full"
    retry_after_seconds = 1


class DeadlineUnreachableException(InferenceGatewayException):
    """The queue ahead would outlast the request's deadline; refused without waiting."""

    kind = ErrorKind.REFUSED
    slug = "deadline-unreachable"
    title = "Deadline cannot be met"
    reject_reason = "deadline_unreachable"
    retry_after_seconds = 1


class ServiceDrainingException(InferenceGatewayException):
    """The service is shutting down and takes no new work."""

    kind = ErrorKind.UNAVAILABLE
    slug = "draining"
    title = "Service shutting down"
    reject_reason = "draining"
    retry_after_seconds = 1


class InflightBytesException(InferenceGatewayException):
    """Uploads in memory already reach ``MAX_INFLIGHT_BYTES``."""

    kind = ErrorKind.REFUSED
    slug = "memory-pressure"
    title = "Too many uploads in memory"
    reject_reason = "inflight_bytes"
    retry_after_seconds = 1


class ClientClosedRequestException(InferenceGatewayException):
    """The client went away before its answer was ready (nginx's 499)."""

    kind = ErrorKind.CANCELLED
    slug = "client-closed-request"
    title = "Client closed request"


class ModelInferenceException(InferenceGatewayException):
    """The forward pass failed."""

    kind = ErrorKind.INTERNAL
    slug = "inference-failed"
    title = "Inference failed"


class NonFiniteScoresException(ModelInferenceException):
    """The forward pass gave NaN or infinite scores for one input: the model's fault for
    an image the gateway prepared, the input's for a tensor a client sent."""


class PayloadTooLargeException(InferenceGatewayException):
    """The request body is larger than ``MAX_BODY_BYTES``."""

    kind = ErrorKind.REFUSED
    slug = "payload-too-large"
    title = "Payload too large"
    reject_reason = "payload_too_large"


class UnsupportedMediaTypeException(InferenceGatewayException):
    """The declared content type is not one the endpoint accepts."""

    kind = ErrorKind.INVALID_INPUT
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class TooManyConnectionsException(InferenceGatewayException):
    """The worker already holds ``MAX_CONNECTIONS`` open connections."""

    kind = ErrorKind.REFUSED
    slug = "too-many-connections"
    title = "Too many connections"
    reject_reason = "connection_limit"
    retry_after_seconds = 1


class TooManyCallsException(TooManyConnectionsException):
    """The worker already serves ``GRPC_MAX_CALLS`` gRPC calls (its connection limit's
    twin: a gRPC connection carries many calls)."""

    slug = "too-many-calls"
    title = "Too many calls"


class HeaderFieldsTooLargeException(InferenceGatewayException):
    """The request line and headers exceed ``MAX_HEADER_BYTES`` or ``MAX_HEADER_COUNT``."""

    kind = ErrorKind.INVALID_INPUT
    slug = "header-too-large"
    title = "Request header fields too large"


class MalformedRequestException(InferenceGatewayException):
    """The bytes are not an HTTP/1.1 request the gateway accepts."""

    kind = ErrorKind.INVALID_INPUT
    slug = "malformed-request"
    title = "Malformed request"


class UnauthenticatedException(InferenceGatewayException):
    """The request lacks the credential the action needs, or carries a wrong one."""

    kind = ErrorKind.UNAUTHENTICATED
    slug = "unauthenticated"
    title = "Authentication required"


class ExtensionDisabledException(InferenceGatewayException):
    """The action belongs to a feature this server was started without."""

    kind = ErrorKind.FORBIDDEN
    slug = "extension-disabled"
    title = "Not enabled on this server"


class ModelLoadFailedException(InferenceGatewayException):
    """An explicit load of a model from the repository failed: its files must change."""

    kind = ErrorKind.INVALID_INPUT
    slug = "model-load-failed"
    title = "Model failed to load"


def gateway_exception_names() -> list[str]:
    """Class names of every gateway exception (the bounded ``exception_type`` values)."""
    found: list[str] = []
    pending: list[type[InferenceGatewayException]] = [InferenceGatewayException]
    while pending:
        cls = pending.pop()
        found.append(cls.__name__)
        pending.extend(cls.__subclasses__())
    return sorted(found)
