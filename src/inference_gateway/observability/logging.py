"""The gateway's own log lines: a prediction's one line and its errors.

Everything else about logging (JSON lines, trace ids, `LogContext`, the access line,
secrets kept out) is the observability library's (`golden_signals.logs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from golden_signals import logs
from golden_signals.logs import debug_enabled

#: The ``logger`` field of the gateway's own lines.
LOGGER_NAME = "inference_gateway"


def setup_logging(
    level: str = "INFO",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    traceback_locals: bool = False,
) -> None:
    """The library's `golden_signals.logs.setup_logging`, the gateway's lines named
    `LOGGER_NAME`."""
    logs.setup_logging(
        level, fmt, stream, traceback_locals=traceback_locals, logger_name=LOGGER_NAME
    )


@dataclass(frozen=True, slots=True)
class InferenceLogFields:
    """A prediction's answer, put on its request's one log line."""

    model_name: str
    model_version: str
    prediction_class: str
    confidence: float
    inference_ms: float
    batch_size: int


def log_inference_start(
    logger: structlog.typing.FilteringBoundLogger, model_name: str, **fields: Any
) -> None:
    """Log that a prediction was handed to the model (DEBUG: its one INFO line is
    written when it completes)."""
    if debug_enabled():
        logger.debug("Inference started", model_name=model_name, **fields)


def log_inference_complete(
    logger: structlog.typing.FilteringBoundLogger,
    model_name: str,
    prediction_class: str,
    confidence: float,
    duration_ms: float,
    **fields: Any,
) -> None:
    """The one line of a successful prediction: the access line's fields plus its answer.

    Written instead of `log_request_complete` for a prediction that got an answer, so a
    prediction still logs exactly once (as in the specification's example line).
    """
    logger.info(
        "Inference completed",
        model_name=model_name,
        prediction_class=prediction_class,
        confidence=round(confidence, 6),
        duration_ms=round(duration_ms, 3),
        **fields,
    )


def log_error(
    logger: structlog.typing.FilteringBoundLogger,
    message: str,
    exc: BaseException,
    *,
    expected: bool = False,
    **fields: Any,
) -> None:
    """Log an error once: WARNING without traceback when expected, ERROR with one if not."""
    if expected:
        logger.warning(message, error_type=type(exc).__name__, error=str(exc), **fields)
    else:
        logger.error(message, error_type=type(exc).__name__, exc_info=exc, **fields)
