"""Logs: one JSON object per line, the spec's fields, correlation, no forged lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from golden_signals.logs import LogContext, get_logger, reset_logging
from inference_gateway.api.keys import add_key
from inference_gateway.app import create_app
from inference_gateway.observability.logging import log_error, log_inference_start, setup_logging
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    json_log_capture,
    make_settings,
    ready_client,
    real_app,
)
from tests.images import cat_jpeg

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Route all logging to a buffer as JSON at DEBUG; restore defaults after."""
    with json_log_capture("DEBUG") as stream:
        yield stream


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [line for line in stream.getvalue().splitlines() if line]
    return [json.loads(line) for line in lines]  # every line is exactly one JSON object


def test_request_logs_carry_the_spec_fields(json_logs: io.StringIO) -> None:
    with TestClient(real_app()) as client:
        ready_client(client)
        response = client.post(
            "/predict",
            content=cat_jpeg(),
            headers={**JPEG, "x-request-id": "req-42", "x-user-id": "alice"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    trace_id = body["trace_id"]
    records = [
        r for r in _records(json_logs) if r.get("request_id") == "req-42" and r["level"] != "DEBUG"
    ]
    # One line per request: a prediction's access line is the spec's "Inference completed".
    assert len(records) == 1
    (record,) = records
    assert record["message"] == "Inference completed"
    assert (
        datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
        .utcoffset()
        .total_seconds()
        == 0
    )
    assert record["level"] == "INFO"
    assert record["logger"] == "inference_gateway"
    assert record["trace_id"] == trace_id
    assert re.fullmatch(r"[0-9a-f]{16}", str(record["span_id"]))
    assert record["trace_flags"] in ("01", "03")
    assert record["user_id"] == "alice"
    assert record["method"] == "POST"
    assert record["endpoint"] == "/predict"
    assert record["status_code"] == 200
    assert isinstance(record["duration_ms"], float)
    # The line tells the answer the client got: the real model's top prediction.
    top = body["predictions"][0]
    assert record["model_name"] == body["model"]["name"]
    assert record["prediction_class"] == top["label"]
    assert record["confidence"] == pytest.approx(top["confidence"], abs=1e-6)  # 6 decimals
    assert record["batch_size"] == 1
    assert isinstance(record["inference_ms"], float)


def test_one_story_per_request_logs_spans_and_exemplar_share_ids(json_logs: io.StringIO) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(
        make_settings(), span_processors=(SimpleSpanProcessor(exporter),), configure_logging=False
    )
    with TestClient(app) as client:
        ready_client(client)
        response = client.post("/predict", content=cat_jpeg(), headers=JPEG)
        scrape = client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text
    body = response.json()
    trace_id, request_id = body["trace_id"], body["request_id"]
    assert response.headers["x-request-id"] == request_id
    logs = [r for r in _records(json_logs) if r.get("request_id") == request_id]
    assert logs and {r["trace_id"] for r in logs} == {trace_id}
    span_ids = {format(s.context.span_id, "016x") for s in exporter.get_finished_spans()}
    assert {
        format(s.context.trace_id, "032x")
        for s in exporter.get_finished_spans()
        if s.name == "POST /predict"
    } >= {trace_id}
    assert all(r["span_id"] in span_ids for r in logs)
    assert f'trace_id="{trace_id}"' in scrape


def test_unexpected_errors_log_once_with_type_and_traceback(json_logs: io.StringIO) -> None:
    app = controlled_app(ControlledBackend())

    @app.get("/explode")
    async def explode() -> None:
        raise ZeroDivisionError("division by zero in handler")

    with TestClient(app, raise_server_exceptions=False) as client:
        ready_client(client)
        response = client.get("/explode", headers={"x-request-id": "boom-1"})
    assert response.status_code == 500
    errors = [
        r for r in _records(json_logs) if r.get("request_id") == "boom-1" and r["level"] == "ERROR"
    ]
    assert len(errors) == 1
    assert errors[0]["error_type"] == "ZeroDivisionError"
    assert errors[0]["status_code"] == 500
    exception = errors[0]["exception"]
    assert isinstance(exception, list) and exception[0]["exc_type"] == "ZeroDivisionError"
    assert any(frame["name"] == "explode" for frame in exception[0]["frames"])


def test_client_errors_log_one_warning_with_the_reason(json_logs: io.StringIO) -> None:
    app = controlled_app(ControlledBackend())
    with TestClient(app) as client:
        ready_client(client)
        client.post("/predict", content=b"not an image", headers={**JPEG, "x-request-id": "bad-1"})
    lines = [
        r for r in _records(json_logs) if r.get("request_id") == "bad-1" and r["level"] != "DEBUG"
    ]
    assert len(lines) == 1
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["error_type"] == "InvalidImageException"
    assert "exception" not in lines[0]


def test_library_and_uvicorn_records_use_the_same_renderer(json_logs: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 123)
    logging.getLogger("some.library").warning("careful")
    records = _records(json_logs)
    assert records[0]["message"] == "Started server process [123]"
    assert records[0]["logger"] == "uvicorn.error"
    assert records[1]["level"] == "WARNING"


@pytest.mark.parametrize(
    "hostile",
    ["line one\nline two", "\x1b[31mred\x1b[0m", 'fake"}\n{"level":"CRITICAL"', "x" * 10_000],
    ids=["newline", "ansi", "json-breakout", "10kb"],
)
def test_user_text_cannot_forge_a_json_line(json_logs: io.StringIO, hostile: str) -> None:
    get_logger().info("Upload", filename=hostile)
    records = _records(json_logs)
    assert len(records) == 1
    assert records[0]["message"] == "Upload"
    assert len(str(records[0]["filename"])) <= 4096 + len("…[truncated]")


def test_values_json_cannot_hold_are_written_as_their_repr_or_own_text(
    json_logs: io.StringIO,
) -> None:
    class Rendered:
        def __structlog__(self) -> str:
            return "rendered"

    get_logger().info("Odd values", when=datetime(2026, 1, 2), tags={"a"}, own=Rendered())
    (record,) = _records(json_logs)
    assert record["when"] == "2026-01-02T00:00:00"  # what JSON can hold, as such
    assert record["tags"] == "{'a'}"
    assert record["own"] == "rendered"


def test_values_json_encoders_refuse_are_written_as_text_never_raised(
    json_logs: io.StringIO,
) -> None:
    """An integer beyond 64 bits or a mapping with non-string keys (orjson refuses both
    even with a fallback) never fails the code that logs: that field is its repr."""
    get_logger().info("Big", count=2**70, by_id={1: "a"}, plain="kept")
    logging.getLogger("some.library").warning("Big too", extra={"count": -(2**80)})
    big, library = _records(json_logs)
    assert big["count"] == str(2**70)
    assert big["by_id"] == "{1: 'a'}"
    assert big["plain"] == "kept" and big["message"] == "Big"
    assert library["count"] == str(-(2**80)) and library["message"] == "Big too"


def test_many_short_values_are_each_kept_whole(json_logs: io.StringIO) -> None:
    """Together longer than one field may be (the check that lets most lines through
    without a look at each field), each short: nothing is cut."""
    fields = {f"field_{i}": "x" * 1000 for i in range(8)}
    get_logger().info("Wide", **fields)
    (record,) = _records(json_logs)
    assert all(record[name] == value for name, value in fields.items())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_logs_its_own_pid(json_logs: io.StringIO) -> None:
    """The process id on each line is read once per process: a worker forked from a
    process that had logged already writes its own."""
    get_logger().info("Before the fork")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: log a line to the pipe, then leave at once
        try:
            stream = io.StringIO()
            structlog.configure(logger_factory=lambda *_: structlog.WriteLogger(stream))
            get_logger().info("In the worker")
            os.write(write, stream.getvalue().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        line = pipe.read()
    os.waitpid(child, 0)
    assert json.loads(line)["pid"] == child
    assert _records(json_logs)[0]["pid"] == os.getpid()


def test_hostile_request_and_user_ids_are_dropped(json_logs: io.StringIO) -> None:
    app = controlled_app(ControlledBackend())
    with TestClient(app) as client:
        ready_client(client)
        response = client.get(
            "/health", headers={"x-request-id": "a" * 10_000, "x-user-id": "bob\tx"}
        )
    rid = response.headers["x-request-id"]
    assert len(rid) == 36
    access = next(
        r
        for r in _records(json_logs)
        if r.get("request_id") == rid and r["message"] == "Request completed"
    )
    assert "user_id" not in access


def test_console_format_is_readable_and_strips_control_characters() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "console", stream=stream)
    try:
        get_logger().info("Hello console", user_id="eve\x1b[2J\nmallory")
        logging.getLogger("uvicorn.error").info("from uvicorn")
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    out = stream.getvalue()
    assert "Hello console" in out and "from uvicorn" in out
    assert "\x1b" not in out
    assert len(out.splitlines()) == 2
    assert "evemallory" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_log_context_survives_await_and_reaches_threads(json_logs: io.StringIO) -> None:
    logger = get_logger()

    async def work() -> None:
        with LogContext(request_id="ctx-1", user_id=None):
            await asyncio.sleep(0)
            logger.info("after await")
            await asyncio.to_thread(logger.info, "in a thread")
        logger.info("outside")

    asyncio.run(work())
    with LogContext(model_name="m"):
        log_inference_start(logger, "m")
    records = [r for r in _records(json_logs) if r["logger"] == "inference_gateway"]
    assert records[0]["request_id"] == "ctx-1" and records[1]["request_id"] == "ctx-1"
    assert "user_id" not in records[0]
    assert "request_id" not in records[2]
    assert records[3]["message"] == "Inference started" and records[3]["level"] == "DEBUG"


def test_nested_log_contexts_and_structlogs_own_contextvars_reach_every_line(
    json_logs: io.StringIO,
) -> None:
    """An inner block adds to the outer one's fields and replaces the ones it names,
    leaving them as they were on exit; fields an app binds with structlog's own
    ``bind_contextvars`` reach the same lines, the standard library's included; a
    line's own field wins over a bound one."""
    logger = get_logger()
    structlog.contextvars.bind_contextvars(tenant="acme")
    try:
        with LogContext(request_id="outer", user_id="alice"):
            with LogContext(request_id="inner", model_name="m"):
                logger.info("inner")
                logging.getLogger("somelib").warning("from the standard library")
                logger.info("own field", user_id="bob")
            logger.info("outer")
    finally:
        structlog.contextvars.clear_contextvars()
    inner, stdlib, own, outer = _records(json_logs)
    for record in (inner, stdlib):
        assert record["request_id"] == "inner" and record["user_id"] == "alice"
        assert record["model_name"] == "m" and record["tenant"] == "acme"
    assert stdlib["logger"] == "somelib" and stdlib["level"] == "WARNING"
    assert own["user_id"] == "bob" and own["request_id"] == "inner"
    assert outer["request_id"] == "outer" and "model_name" not in outer
    assert outer["tenant"] == "acme"


def test_log_context_fields_are_structlogs_contextvars(json_logs: io.StringIO) -> None:
    """`LogContext` binds through structlog's contextvars: the innermost binding of a
    name wins whichever way it was made, ``get_contextvars`` sees the block's fields,
    and ``clear_contextvars`` clears them."""
    logger = get_logger()
    with LogContext(request_id="outer", user_id="alice"):
        structlog.contextvars.bind_contextvars(request_id="rebound")
        logger.info("rebound")
        assert structlog.contextvars.get_contextvars() == {
            "request_id": "rebound",
            "user_id": "alice",
        }
        structlog.contextvars.clear_contextvars()
        logger.info("cleared")
    rebound, cleared = _records(json_logs)
    assert rebound["request_id"] == "rebound" and rebound["user_id"] == "alice"
    assert "request_id" not in cleared and "user_id" not in cleared


def test_log_error_levels(json_logs: io.StringIO) -> None:
    logger = get_logger()
    log_error(logger, "expected", ValueError("v"), expected=True)
    try:
        {}["k"]
    except KeyError as exc:
        log_error(logger, "unexpected", exc)
    expected, unexpected = _records(json_logs)
    assert expected["level"] == "WARNING" and "exception" not in expected
    assert unexpected["level"] == "ERROR" and unexpected["exception"][0]["exc_type"] == "KeyError"


def test_a_log_line_that_cannot_be_written_never_fails_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A closed or broken stdout loses lines: it must not turn a prediction, a gRPC
    call or the batcher's crash report into an exception of its own."""
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        stream.close()
        get_logger().info("lost")
        get_logger().error("lost too", exc_info=RuntimeError("x"))
        logging.getLogger("uvicorn.error").warning("a library's line, lost")
    finally:
        reset_logging()
    assert capsys.readouterr().err.count("cannot write log lines") == 1  # said once


def _fail_holding(secret: str) -> None:
    held = {"authorization": f"Bearer {secret}"}  # a frame's local, as a request's headers
    raise RuntimeError(f"failed with {len(held)} header")


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("origin", ["structlog", "stdlib"])
def test_tracebacks_never_carry_local_variables(fmt: str, origin: str) -> None:
    """A traceback names frames, files and lines, never the values a frame held: those
    are request headers with API keys and the admin token."""
    secret = "sk-never-in-a-log-0123456789"  # noqa: S105 - a made-up key to look for
    stream = io.StringIO()
    setup_logging("INFO", fmt, stream=stream)
    try:
        try:
            _fail_holding(secret)
        except RuntimeError as exc:
            if origin == "structlog":
                log_error(get_logger(), "Request failed", exc)
            else:
                logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    finally:
        reset_logging()
    out = stream.getvalue()
    assert "_fail_holding" in out and "RuntimeError" in out  # the traceback is there
    assert secret not in out


def test_traceback_locals_are_a_debugging_switch() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream, traceback_locals=True)
    try:
        try:
            _fail_holding("visible-when-asked")
        except RuntimeError as exc:
            log_error(get_logger(), "Request failed", exc)
    finally:
        reset_logging()
    assert "visible-when-asked" in stream.getvalue()


def test_a_failed_request_never_logs_the_api_key_it_carried(tmp_path: Path) -> None:
    """The key check's frame holds the caller's headers; a 500 beneath it logs the
    traceback through that frame, and the key must not be in it."""
    keys_file = tmp_path / "keys"
    key = add_key(keys_file, "alice")
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        app = controlled_app(ControlledBackend(), api_keys_file=keys_file)

        @app.get("/explode")
        async def explode() -> None:
            raise ZeroDivisionError("division by zero in handler")

        with TestClient(app, raise_server_exceptions=False) as client:
            ready_client(client)
            for headers in ({"x-api-key": key}, {"authorization": f"Bearer {key}"}):
                assert client.get("/explode", headers=headers).status_code == 500
    finally:
        reset_logging()
    out = stream.getvalue()
    assert out.count('"error_type":"ZeroDivisionError"') == 2
    assert key not in out
