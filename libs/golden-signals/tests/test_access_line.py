"""The access line written straight through the configured logger's processors is the
line structlog itself writes, for the logger of each configuration."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from golden_signals.logs import (
    LogContext,
    RequestLogContext,
    configured_logger,
    get_logger,
    log_request_complete,
    reset_logging,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_logging()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_configured_loggers_access_line_is_structlogs_line_field_for_field() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream, logger_name="shop")
    direct, through_structlog = configured_logger(), get_logger()
    calls: list[dict[str, Any]] = [
        {"status_code": 200, "duration_ms": 1.23456, "trace_sampled": False},
        {"status_code": 404, "duration_ms": 0.5},
        {"status_code": 500, "duration_ms": 2.0, "error_type": "ValueError"},
        {"status_code": 503, "duration_ms": 2.0, "expected": True, "password": "hunter2"},
        {"status_code": 200, "duration_ms": 0.1, "level": logging.DEBUG},  # not written
        {"status_code": 200, "duration_ms": 0.1, "note": "x" * 5000},  # cut
    ]
    structlog.contextvars.bind_contextvars(tenant="acme")
    try:
        with RequestLogContext(request_id="req-1", method="GET"), LogContext(user_id="u"):
            for call in calls:
                for logger in (direct, through_structlog):
                    log_request_complete(logger, "GET", "/items/{item_id}", **call)
    finally:
        structlog.contextvars.clear_contextvars()
    written = _lines(stream)
    assert len(written) == 2 * (len(calls) - 1)
    for mine, theirs in zip(written[::2], written[1::2], strict=True):
        assert mine.pop("timestamp") <= theirs.pop("timestamp")
        assert list(mine.items()) == list(theirs.items())  # the same fields, in order
    first, _, not_found, _, failed, _, refused, _, long, _ = written
    assert first["request_id"] == "req-1" and first["tenant"] == "acme"
    assert first["user_id"] == "u" and first["logger"] == "shop"
    assert first["duration_ms"] == 1.235 and first["level"] == "INFO"
    assert not_found["level"] == "WARNING" and failed["level"] == "ERROR"
    assert refused["level"] == "WARNING" and refused["password"] == "[redacted]"
    assert long["note"].endswith("…[truncated]")


def test_an_earlier_configurations_logger_keeps_its_stream_and_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("WARNING", "json", first)
    earlier = configured_logger()
    setup_logging("INFO", "json", second)
    log_request_complete(earlier, "GET", "/a", 200, 1.0)  # below its WARNING
    log_request_complete(earlier, "GET", "/a", 404, 1.0)
    log_request_complete(configured_logger(), "GET", "/b", 200, 1.0)
    assert [line["endpoint"] for line in _lines(first)] == ["/a"]
    assert [line["endpoint"] for line in _lines(second)] == ["/b"]


def test_a_request_context_yields_to_bound_fields_and_survives_a_clear() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    logger = get_logger()
    with RequestLogContext(request_id="outer", user_id=None):
        with RequestLogContext(request_id="inner"):
            logger.info("inner")
        structlog.contextvars.bind_contextvars(request_id="rebound")
        logger.info("rebound")
        structlog.contextvars.clear_contextvars()
        logger.info("cleared")
        logger.info("own", request_id="own")
    logger.info("after")
    inner, rebound, cleared, own, after = _lines(stream)
    assert inner["request_id"] == "inner" and "user_id" not in inner
    assert rebound["request_id"] == "rebound"
    assert cleared["request_id"] == "outer"
    assert own["request_id"] == "own"
    assert "request_id" not in after


@pytest.mark.parametrize("registry", ["structlog's", "missing"])
def test_the_bound_fields_are_structlogs_merge_whatever_was_bound_and_cleared(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`merge_structlog_context` reads structlog's own registry of variables (private:
    without it, structlog's merge itself): what it adds to a line is what structlog's
    ``merge_contextvars`` adds, for names bound, rebound, unbound, cleared and reset."""
    from golden_signals import logs

    if registry == "missing":
        monkeypatch.setattr(logs, "_STRUCTLOG_VARS", None)

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        ours = logs.merge_structlog_context(None, "info", {"own": 1, "tenant": "line's"})
        theirs = structlog.contextvars.merge_contextvars(
            None, "info", {"own": 1, "tenant": "line's"}
        )
        return ours, theirs

    try:
        structlog.contextvars.bind_contextvars(tenant="acme", shard=3, region="eu")
        ours, theirs = both()
        assert ours == theirs == {"own": 1, "tenant": "line's", "shard": 3, "region": "eu"}
        tokens = structlog.contextvars.bind_contextvars(shard=4)
        structlog.contextvars.unbind_contextvars("region")
        ours, theirs = both()
        assert ours == theirs and ours["shard"] == 4 and "region" not in ours
        structlog.contextvars.reset_contextvars(**tokens)
        assert both()[0] == both()[1] and both()[0]["shard"] == 3
        structlog.contextvars.clear_contextvars()
        assert both() == ({"own": 1, "tenant": "line's"},) * 2
    finally:
        structlog.contextvars.clear_contextvars()


def test_a_line_under_a_span_with_odd_values_is_structlogs_line() -> None:
    """Under a span whose trace tail sampling ruled on (the flags' sampled bit from
    ``trace_sampled``, the span handed over rather than looked up), and with values
    that are not flat or not 64-bit: the same line by both ways."""
    from opentelemetry import trace

    from golden_signals.sampling import TailSampling

    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    direct, through_structlog = configured_logger(), get_logger()
    span = TailSampling([], ratio=0.0, slow_seconds=1.0).tracer.start_root_span("GET", None)
    odd: dict[str, Any] = {
        "trace_sampled": False,
        "headers": {"authorization": "Bearer x", "accept": "*/*"},
        "big": 2**70,
        "tags": ["a", ("b", 1)],
    }
    with trace.use_span(span, end_on_exit=True):
        log_request_complete(direct, "GET", "/a", 200, 1.0, current_span=span, **odd)
        log_request_complete(through_structlog, "GET", "/a", 200, 1.0, **odd)
    mine, theirs = _lines(stream)
    mine.pop("timestamp"), theirs.pop("timestamp")
    assert list(mine.items()) == list(theirs.items())
    assert mine["trace_flags"] == "00" and len(mine["trace_id"]) == 32
    assert mine["headers"] == {"authorization": "[redacted]", "accept": "*/*"}
    assert mine["big"] == repr(2**70)


def test_a_processor_list_changed_in_place_reaches_the_access_line() -> None:
    """structlog's ``capture_logs`` swaps the configured processors in place: the access
    line of the configured logger goes where the changed list sends it."""
    from structlog.testing import capture_logs

    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    with capture_logs() as captured:
        log_request_complete(configured_logger(), "GET", "/a", 200, 1.0)
    assert [entry["event"] for entry in captured] == ["Request completed"]
    assert stream.getvalue() == ""
    log_request_complete(configured_logger(), "GET", "/b", 200, 1.0)  # the list restored
    assert [line["endpoint"] for line in _lines(stream)] == ["/b"]


def _without_timestamp(text: str) -> str:
    import re

    return re.sub(r'"timestamp":"[^"]*"', '"timestamp":""', text)


def _spans() -> dict[str, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from golden_signals.sampling import TailSampling

    recorded = TailSampling([], ratio=0.0, slow_seconds=1.0).tracer.start_root_span("GET", None)
    sdk = TracerProvider().get_tracer("t").start_span("GET")
    return {"recorded": recorded, "sdk": sdk, "none": trace.INVALID_SPAN}


@pytest.mark.parametrize("span_kind", ["recorded", "sdk", "none"])
@pytest.mark.parametrize("sampled", [None, True, False])
@pytest.mark.parametrize("user_id", [None, "user-7"])
def test_the_middlewares_line_from_its_template_is_structlogs_line_to_the_character(
    span_kind: str, sampled: bool | None, user_id: str | None
) -> None:
    """`write_request_line` formats the common access line into one template: it must be
    the very text structlog writes for the same call, whatever the level, route
    template (quotes, backslashes, control and non-ASCII characters), duration, span,
    tail-sampling ruling and user; and a line it cannot write that way is left to the
    caller, nothing written."""
    from opentelemetry import trace

    from golden_signals.logs import REQUEST_FIELDS, write_request_line

    stream = io.StringIO()
    setup_logging("INFO", "json", stream, logger_name='shop "eu"')
    direct, through_structlog = configured_logger(), get_logger()
    span = _spans()[span_kind]
    fields = {"request_id": "3f0c-req", "method": "GET"}
    if user_id is not None:
        fields["user_id"] = user_id
    extra: dict[str, Any] = {} if sampled is None else {"trace_sampled": sampled}
    cases = [
        ("GET", "/items/{item_id}", 200, 1.23456),
        ("POST", 'odd/"quoted"\\back\tslash/é/☃', 404, 0.0),
        ("DELETE", "unmatched", 500, 123456.78951),
        ("PATCH", "/slow", 503, 0.0004),
    ]
    token = REQUEST_FIELDS.set(fields)
    try:
        with trace.use_span(span):
            for method, endpoint, status, duration_ms in cases:
                assert write_request_line(
                    direct, method, endpoint, status, duration_ms, span, sampled, fields
                )
                log_request_complete(
                    through_structlog, method, endpoint, status, duration_ms, **extra
                )
    finally:
        REQUEST_FIELDS.reset(token)
    written = stream.getvalue().splitlines()
    assert len(written) == 2 * len(cases)
    for mine, theirs in zip(written[::2], written[1::2], strict=True):
        assert _without_timestamp(mine) == _without_timestamp(theirs)
        assert json.loads(mine)["timestamp"] <= json.loads(theirs)["timestamp"]


def test_a_line_the_template_cannot_write_is_left_to_the_caller() -> None:
    """Fields bound in structlog's context, the request's fields rebound by the app or
    with a field of its own, a method outside the standard ones, an overlong or invalid
    route template, an absurd duration, a ruling that is not a bool, or a logger that is
    not the configured one: nothing written, False."""
    from opentelemetry import trace

    from golden_signals.logs import REQUEST_FIELDS, write_request_line

    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    direct = configured_logger()
    span = trace.INVALID_SPAN
    fields = {"request_id": "r", "method": "GET"}
    token = REQUEST_FIELDS.set(fields)
    try:
        assert not write_request_line(get_logger(), "GET", "/a", 200, 1.0, span, None, fields)
        assert not write_request_line(direct, "PROPFIND", "/a", 200, 1.0, span, None, fields)
        assert not write_request_line(direct, "GET", "/" * 1025, 200, 1.0, span, None, fields)
        assert not write_request_line(direct, "GET", "/a", 200, 1e16, span, None, fields)
        assert not write_request_line(direct, "GET", "/a", 200, 1.0, span, None, dict(fields))
        assert not write_request_line(direct, "GET", "/a", 200, 1.0, span, 1, fields)  # type: ignore[arg-type]
        assert not write_request_line(direct, "GET", "/\ud800", 200, 1.0, span, None, fields)
        token_more = REQUEST_FIELDS.set({**fields, "tenant": "acme"})
        try:  # a field of the app's own beside the request's
            more = REQUEST_FIELDS.get()
            assert not write_request_line(direct, "GET", "/a", 200, 1.0, span, None, more)
        finally:
            REQUEST_FIELDS.reset(token_more)
        with LogContext(tenant="acme"):
            assert not write_request_line(direct, "GET", "/a", 200, 1.0, span, None, fields)
        assert write_request_line(direct, "GET", "/a", 200, 1.0, span, None, fields)
    finally:
        REQUEST_FIELDS.reset(token)
    assert [line["endpoint"] for line in _lines(stream)] == ["/a"]
