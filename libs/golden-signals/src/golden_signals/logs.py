"""Structured logging with structlog: one JSON object per line, trace ids included.

`setup_logging` routes structlog *and* the standard library (the app's own `logging`
lines, uvicorn's, libraries') through the same processors and renderer, so stdout never
mixes formats. Request context (request id, user id, route) lives in contextvars via
`LogContext`, so it survives ``await`` and is copied into worker threads by the code
that submits work. Values of fields named like secrets (``authorization``, cookies, API
keys, tokens, passwords) are replaced before any renderer sees them (deeper than four
levels of nesting, a value is replaced whole).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import math
import os
import re
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from golden_signals.asgi import HTTP_METHODS
from golden_signals.tracing import flags_text, text_ids

#: The ``logger`` field of lines logged through structlog, unless `setup_logging` names
#: another.
LOGGER_NAME = "app"

#: Control characters (C0, DEL, C1) and ANSI escapes are stripped from console output.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x1f\x7f-\x9f]")
#: Longest string value a log line may carry in one field.
MAX_FIELD_CHARS = 4096


#: The second last formatted by `add_timestamp`, and its text up to the fraction.
_second: tuple[int, str] = (0, "")


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: now, ISO 8601 in UTC with microseconds (``2026-12-06T22:42:33.990161Z``,
    as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it), the date and time
    formatted once a second."""
    event_dict["timestamp"] = _timestamp(time.time_ns())
    return event_dict


def _timestamp(now_ns: int) -> str:
    """The time ``now_ns`` (nanoseconds since the epoch) as `add_timestamp` writes it."""
    global _second  # noqa: PLW0603 - a cache; a race formats the same second twice
    whole, fraction = divmod(now_ns, 1_000_000_000)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    return "%s%06dZ" % (second[1], fraction // 1000)  # noqa: UP031 - faster


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id``, ``span_id`` and ``trace_flags`` of the active span, if any;
    on a line that carries tail sampling's decision (``trace_sampled``) the flags'
    sampled bit is that decision, as in the response's ``traceparent``."""
    return _add_ids(event_dict, trace.get_current_span())  # one context lookup


def _add_ids(event_dict: EventDict, span: trace.Span) -> EventDict:
    """`add_trace_context` for ``span``."""
    ids = text_ids(span)  # text that leaves the process: not indexed for links
    if ids is not None:
        trace_id, span_id, flags = ids
        sampled = event_dict.get("trace_sampled")
        event_dict.setdefault("trace_id", trace_id)
        event_dict.setdefault("span_id", span_id)
        event_dict.setdefault("trace_flags", flags_text(flags, sampled))
    return event_dict


_INFO = logging.INFO


def _access_level(status_code: int, expected: bool = False) -> int:
    """An access line's level: ERROR for a 5xx (WARNING when ``expected``), WARNING for
    a 4xx, else INFO."""
    if status_code >= 500 and not expected:
        return logging.ERROR
    return logging.WARNING if status_code >= 400 else logging.INFO


#: Field names whose values are secrets: matched case-insensitively, ``-`` as ``_``, a
#: camelCase name as its words. A word that names a secret wherever it stands
#: (``secret_key``, ``aws_secret_access_key``, ``password_hash``, ``cookies``,
#: ``credentials``, ``authorization``, ``auth_header``, ``private_key_pem``), or a name
#: that ends in one of a credential's names (``access_token``, ``x_auth``, ``jwt``,
#: ``api_keys``, ``session_id``), or in ``_tokens`` after anything but a count's word. A
#: count stays (``max_tokens``, ``prompt_tokens``), an id of a key (``api_key_id``,
#: ``private_key_id``) and an ``auth_method`` too.
SECRET_FIELDS = re.compile(
    r"(^|_)(passwords?|passwd|pwd|passphrase|secrets?|secretkey|cookies?|credentials?|"
    r"authorization|auth_(headers?|keys?|tokens?|cookies?)|private_?keys?(?!_id$))(_|$)"
    r"|(^|_)(token|auth|jwt|bearer|api_?keys?|access_?keys?|signing_?keys?|"
    r"(encryption|master|client|ssh|tls)_keys?|session_?id)$"
    r"|(?<!max)(?<!num)(?<!total)(?<!input)(?<!output)(?<!prompt)(?<!cached)(?<!reasoning)"
    r"(?<!completion)_tokens$",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


#: `_is_secret`'s answers by field name: a line's fields are mostly the same few names,
#: so a dict lookup instead of a regular expression per field (bounded: names are code's).
_secret_names: dict[str | bytes, bool] = {}


def _is_secret(name: object) -> bool:
    if not isinstance(name, str | bytes):
        return False
    known = _secret_names.get(name)
    if known is None:
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        text = _CAMEL.sub(r"\1_\2", text)  # accessToken, xApiKey: as access_token, x_api_key
        known = bool(SECRET_FIELDS.search(text.replace("-", "_")))
        if len(_secret_names) < 4096:
            _secret_names[name] = known
    return known


def _redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with the values of secret-named keys replaced (mappings, and the
    (name, value) pairs of ASGI headers); deeper than four levels, replaced whole."""
    if depth > 4:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(k) else _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) == 2 and _is_secret(value[0]):
            return (value[0], REDACTED)
        return [_redacted(item, depth + 1) for item in value]
    return value


#: The value types `sanitize_fields` looks into (exact types: an ABC check per field
#: would cost more than the rest of the processor).
_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({int, float, bool, type(None), bytes})


#: Value types with nothing inside to redact (a line made only of these, and short, is
#: left as it is without a look at each field).
_FLAT = frozenset({str, int, float, bool, type(None)})


def sanitize_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every field named like a secret (`SECRET_FIELDS`), and of
    such keys inside mappings and header lists (a ``headers`` field), with `REDACTED`;
    cut strings longer than `MAX_FIELD_CHARS`. Field names already known to be plain
    are skipped in one subset test (a line's names are mostly the same few), and so
    is a line whose values are all flat (`_FLAT`) and together shorter than
    `MAX_FIELD_CHARS` once encoded (most lines: one encoding in C instead of a look at
    each field)."""
    _redact_secret_names(event_dict)
    if _FLAT.issuperset(map(type, event_dict.values())) and _short(event_dict):
        return event_dict
    return _sanitize_values(event_dict)


def _redact_secret_names(event_dict: EventDict) -> None:
    """Replace the value of every field named like a secret with `REDACTED`."""
    if not _plain_names.issuperset(event_dict):
        for key in event_dict.keys() - _plain_names:
            if _is_secret(key):
                event_dict[key] = REDACTED
            elif len(_plain_names) < 4096:
                _plain_names.add(key)


def _sanitize_values(event_dict: EventDict) -> EventDict:
    """Cut strings longer than `MAX_FIELD_CHARS`, redact secrets inside containers."""
    for key, value in event_dict.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_FIELD_CHARS and key != "exception":
                event_dict[key] = value[:MAX_FIELD_CHARS] + "…[truncated]"
        elif kind in _CONTAINERS or (kind not in _SCALARS and isinstance(value, Mapping)):
            event_dict[key] = _redacted(value)
    return event_dict


def _short(event_dict: EventDict) -> bool:
    """Whether a line of flat values encodes to at most `MAX_FIELD_CHARS` characters,
    names included (then no value is longer)."""
    try:
        return len(orjson.dumps(event_dict)) <= MAX_FIELD_CHARS
    except TypeError:  # an integer beyond 64 bits, a name not a string: each field is looked at
        return False


#: Field names seen and found not to be secrets (bounded: names are code's, not input).
_plain_names: set[str] = set()


def _strip_control(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str) and key != "exception":
            event_dict[key] = _CONTROL.sub("", value)
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn duplicates its message with ANSI codes
    return event_dict


#: This process's id (a system call each time otherwise), renewed in a forked child.
_pid = os.getpid()


def _renew_pid() -> None:
    global _pid  # noqa: PLW0603 - the cache above, in a new process
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


#: The logger method that writes each level (structlog's names).
_METHOD_NAMES = {
    logging.CRITICAL: "critical", logging.ERROR: "error", logging.WARNING: "warning",
    logging.INFO: "info", logging.DEBUG: "debug",
}  # fmt: skip
#: Level names as a line writes them, by the logger method that wrote it (``warn`` is the
#: standard library's old alias, ``exception`` an ERROR with its traceback).
_LEVEL_NAMES = {"warn": "WARNING", "exception": "ERROR"}


def add_line_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """`_bound_fields`, then secrets redacted and long strings cut (`sanitize_fields`)."""
    return sanitize_fields(logger, method, _bound_fields(logger, method, event_dict))


def _named(name: str) -> Processor:
    """`add_line_context` for the events of one configuration's structlog loggers, whose
    ``logger`` field is ``name`` unless a line has its own: each configuration's (an app
    instrumented before another in the same process keeps its ``service_name``)."""

    def line_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("logger", name)
        return add_line_context(logger, method, event_dict)

    return line_context


#: structlog's own registry of its context variables, one per name ever bound (private:
#: when a structlog release moves it, `merge_structlog_context` falls back to
#: `structlog.contextvars.merge_contextvars`).
_STRUCTLOG_VARS: dict[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)
_PREFIX_LENGTH = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def merge_structlog_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog's ``merge_contextvars``: the fields bound with ``bind_contextvars``
    (and `LogContext`) added to a line, a line's own winning. Read from each of
    structlog's variables instead of from a copy of the whole context: a look at each
    name ever bound rather than at every variable of the context (OpenTelemetry's,
    asyncio's, the app's), and nothing at all in a process that binds none."""
    registry = _STRUCTLOG_VARS
    if type(registry) is dict:
        try:
            for name, var in registry.items():
                value = var.get()
                if value is not Ellipsis:
                    event_dict.setdefault(name[_PREFIX_LENGTH:], value)
        except RuntimeError:  # a name bound for the first time meanwhile, in a thread
            return structlog.contextvars.merge_contextvars(logger, method, event_dict)
        return event_dict
    return structlog.contextvars.merge_contextvars(logger, method, event_dict)


def _bound_fields(
    logger: WrappedLogger, method: str, event_dict: EventDict, span: trace.Span | None = None
) -> EventDict:
    """What every line gets besides its own fields, in one processor (after its
    ``logger`` name: `_named`, or the record's): the fields bound by `LogContext` (structlog's
    contextvars) and then the request's (`RequestLogContext`), the ``level`` (upper
    case), the ``timestamp`` (`add_timestamp`), the active span's ids
    (`add_trace_context`; ``span``'s when given) and the ``pid``. A line's own fields
    win over the bound ones, and those over the request's."""
    merge_structlog_context(logger, method, event_dict)
    for key, value in REQUEST_FIELDS.get().items():
        event_dict.setdefault(key, value)
    event_dict["level"] = _LEVEL_NAMES.get(method) or method.upper()
    add_timestamp(logger, method, event_dict)
    _add_ids(event_dict, span if span is not None else trace.get_current_span())
    event_dict.setdefault("pid", _pid)  # tells apart the workers of one server
    return event_dict


def _json_line(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """The line: the event renamed ``message``, as one JSON object rendered by orjson (a
    few times faster than the standard library, and strict JSON: a NaN is ``null``, never
    the invalid ``NaN``; what JSON cannot hold is written as its ``repr``, as structlog's
    `JSONRenderer` does)."""
    event_dict["message"] = event_dict.pop("event")
    return _render(event_dict)


def _render(event_dict: EventDict) -> str:
    """A line's fields as one JSON object (`_json_line`, its event renamed already)."""
    try:
        return orjson.dumps(event_dict, default=_unencodable).decode()
    except TypeError:
        # What orjson cannot encode at all (an integer beyond 64 bits, a key that is
        # not a string, nesting too deep): that field as its repr, the line written.
        fields = {key: _encodable(value) for key, value in event_dict.items()}
        return orjson.dumps(fields, default=_unencodable).decode()


def _sanitized_json_line(event_dict: EventDict) -> str:
    """`sanitize_fields` then `_json_line`, the line encoded once: a line of flat values
    whose encoding is at most `MAX_FIELD_CHARS` long has no value to cut, and that
    encoding is the line (``sanitize_fields`` encodes it to learn that, and
    ``_json_line`` again)."""
    if not _plain_names.issuperset(event_dict):
        _redact_secret_names(event_dict)
    event_dict["message"] = event_dict.pop("event")
    if _FLAT.issuperset(map(type, event_dict.values())):
        try:
            encoded = orjson.dumps(event_dict)
        except TypeError:  # an integer beyond 64 bits: each field is looked at
            encoded = b""
        if 0 < len(encoded) <= MAX_FIELD_CHARS:
            return encoded.decode()
    return _render(_sanitize_values(event_dict))


def _encodable(value: Any) -> Any:
    """``value`` if orjson can encode it, else its ``repr``."""
    try:
        orjson.dumps(value, default=_unencodable)
    except TypeError:
        return repr(value)
    return value


def _unencodable(value: Any) -> Any:
    """What a line holds for a value JSON cannot: its ``__structlog__()``, else its
    ``repr`` (as structlog's renderer)."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


def _exceptions(
    renderer: structlog.processors.ExceptionRenderer,
) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    """``renderer``, called only for a line with an exception to render (``exc_info``
    set): the other lines lose an empty ``exc_info`` without its look at it."""

    def render(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("exc_info") is None:
            event_dict.pop("exc_info", None)
            return event_dict
        return renderer(logger, method, event_dict)

    return render


#: One writer per stream (`_writer_of`), shared by every configuration (as structlog's
#: ``WriteLogger`` shares one lock per file): a logger made under an earlier
#: configuration never interleaves its lines with the current one's, nor passes the
#: lines waiting to be written (`_Writer.defer`).
_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()
#: The most a deferred write holds: what a pipe writes in one piece (POSIX's
#: ``PIPE_BUF``), so that the lines of the workers sharing one stdout pipe never
#: interleave mid-line, as one line a write never did.
_ATOMIC_BYTES = getattr(select, "PIPE_BUF", 512)
#: How long an access line may wait to be written with the ones after it (`_Writer.defer`),
#: and how many may wait: about as many as fit in one `_ATOMIC_BYTES` write.
LINGER_SECONDS = 0.1
DEFERRED_LINES = 8


def _writer_of(stream: TextIO) -> _Writer:
    """The writer of ``stream`` (one of its own for a stream that cannot be weakly
    referenced)."""
    with _WRITERS_LOCK:
        try:
            writer = _WRITERS.get(stream)
            if writer is None:
                writer = _WRITERS[stream] = _Writer(stream)
        except TypeError:
            return _Writer(stream)
        return writer


class _Writer:
    """Writes each line to a stream and flushes it, under a lock (the lines of several
    threads never interleave), as structlog's ``WriteLogger``, except that a failed
    write (a closed or broken stdout, a full disk) never raises into the code that
    logged: the line is lost and the first failure said on stderr, as the standard
    library's handlers do. structlog and the standard library's records
    (`_SharedWriterHandler`) write through the same writer (`_writer_of`).

    Access lines may be deferred (`defer`): kept as their values, then formatted and
    written several at a time, in as few system calls as hold them (`flush_deferred`)."""

    def __init__(self, stream: TextIO) -> None:
        """Write to ``stream``."""
        self._write = stream.write
        self._flush = stream.flush
        self._lock = threading.Lock()
        self._failed = False
        # Lines wait only for a stream the operating system writes (a file, a pipe, a
        # socket): a write to one is a system call. An in-memory stream (a test's) or a
        # terminal (a person reading) gets each line at once.
        self._deferrable = _is_os_stream(stream)
        self._deferred: list[_RequestLine] = []
        self._deferred_on: asyncio.AbstractEventLoop | None = None  # the loop they wait on
        self._timed: set[asyncio.AbstractEventLoop] = set()  # the loops whose timer will write

    def msg(self, message: str) -> None:
        """Write one line (and flush), after the deferred ones, or lose it."""
        try:
            with self._lock:
                if self._deferred:  # writes of their own: each at most `_ATOMIC_BYTES`
                    self._write_deferred()
                self._put(message + "\n")
        except Exception as exc:
            self._lost(exc)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def defer(self, line: _RequestLine) -> None:
        """Write an access line (its values: `_render_request_line`) later, formatted
        and written with the others deferred on the running event loop: once
        `DEFERRED_LINES` wait, or about `LINGER_SECONDS` after the first of them (a
        timer on the loop; later if the loop is blocked), in writes of at most
        `_ATOMIC_BYTES`. Only on a loop that serves an instrumented app (`serving_on`:
        its lifespan started there, and its shutdown writes what waits) and to a stream
        the operating system writes; at once otherwise (a test client's short-lived
        loop, a script's, no loop). Lines that waited on another loop are written first.
        A line written meanwhile with `msg` comes after them, and a process that exits
        normally writes them (`_flush_all`); a process killed outright loses them."""
        loop = asyncio._get_running_loop()  # None outside one (no exception to raise)
        if loop is None or loop not in _SERVING or not self._deferrable:
            self.msg(_render_request_line(line))
            return
        try:
            with self._lock:
                if self._deferred and self._deferred_on is not loop:
                    self._write_deferred()  # a list of its own for this loop's lines
                deferred = self._deferred
                deferred.append(line)
                self._deferred_on = loop
                if len(deferred) >= DEFERRED_LINES:
                    self._write_deferred()
                elif loop not in self._timed:  # no timer of this loop's waiting: one now
                    self._timed.add(loop)
                    _DEFERRING.add(self)
                    # In a context of its own: not the request's, kept alive meanwhile.
                    loop.call_later(
                        LINGER_SECONDS, self.flush_deferred, loop, context=contextvars.Context()
                    )
        except Exception as exc:
            self._lost(exc)

    def flush_deferred(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Write the deferred lines, if any: as the timer `defer` set on ``loop``, or
        (None) for a loop that may be ending, whose timers are no longer counted on."""
        try:
            with self._lock:
                if loop is None:
                    self._timed.clear()
                else:
                    self._timed.discard(loop)
                if self._deferred:
                    self._write_deferred()
        except Exception as exc:
            self._lost(exc)

    def _put(self, text: str) -> None:
        """Write ``text`` and flush it (the lock held)."""
        self._write(text)
        self._flush()

    def _write_deferred(self) -> None:
        """Format the deferred lines and write them, no longer waiting, in as few writes
        of at most `_ATOMIC_BYTES` as hold them (a longer line alone; the lock held)."""
        waiting, self._deferred = self._deferred, []
        lines = []
        for values in waiting:
            try:
                lines.append(_render_request_line(values) + "\n")
            except Exception as exc:  # a bug: this line is lost, not the others
                self._lost(exc)
        text = "".join(lines)
        if (len(text) if text.isascii() else len(text.encode())) <= _ATOMIC_BYTES:
            if text:
                self._put(text)  # the common case: they fit in one write
            return
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line) if line.isascii() else len(line.encode())
            if chunk and size + length > _ATOMIC_BYTES:
                self._put("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._put("".join(chunk))

    def forget_deferred(self) -> None:
        """Drop the deferred lines (a forked child's copy of its parent's)."""
        self._deferred = []
        self._timed = set()

    def _lost(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            with contextlib.suppress(Exception):
                sys.stderr.write(f"golden-signals: cannot write log lines: {exc!r}\n")


def _is_os_stream(stream: TextIO) -> bool:
    """Whether ``stream`` writes to a file descriptor that is not a terminal."""
    try:
        return stream.fileno() >= 0 and not stream.isatty()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False


#: Writers that deferred lines (`_Writer.defer`): written at exit, dropped in a forked child.
_DEFERRING: weakref.WeakSet[_Writer] = weakref.WeakSet()


def _flush_all() -> None:
    for writer in list(_DEFERRING):
        writer.flush_deferred()


#: The event loops serving an instrumented app (`serving_on`), with how many apps each.
_SERVING: dict[asyncio.AbstractEventLoop, int] = {}


def serving_on(loop: asyncio.AbstractEventLoop) -> None:
    """An instrumented app's lifespan started on ``loop``: a server's loop, where access
    lines may wait to be written together (`_Writer.defer`) until its shutdown
    (`serving_ended`)."""
    _SERVING[loop] = _SERVING.get(loop, 0) + 1


def serving_ended(loop: asyncio.AbstractEventLoop) -> None:
    """An instrumented app's lifespan ended on ``loop``: the lines waiting are written,
    and once no app serves there, lines are written at once again."""
    count = _SERVING.pop(loop, 0) - 1
    if count > 0:
        _SERVING[loop] = count
    _flush_all()


def _after_fork_in_child() -> None:
    """A forked child: its copy of the parent's waiting lines dropped (the parent writes
    them), and every writer's lock new (one another thread held at the fork would stay
    held)."""
    global _WRITERS_LOCK  # noqa: PLW0603 - the child's own
    _WRITERS_LOCK = threading.Lock()
    _SERVING.clear()  # the parent's loops: the child's own lifespan says where it serves
    for writer in [*_WRITERS.values(), *_DEFERRING]:
        writer._lock = threading.Lock()
        writer.forget_deferred()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


class _SharedWriterHandler(logging.Handler):
    """Writes the standard library's records (uvicorn's, libraries') through the same
    writer, and so under the same lock, as structlog's lines."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


class _WarningRateLimit(logging.Filter):
    """Python warnings (Pillow's ``Corrupt EXIF data``, a library's deprecation) become
    log lines; this lets through one line per warning source (category, file and line)
    every `interval` seconds, however many requests trigger it, and the next line says
    how many were left out (``not_logged_since_last``)."""

    #: Sources remembered at most (a warning source is code, not client text: few).
    MAX_SOURCES = 256

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.interval = interval
        self._sources: dict[str, tuple[float, int]] = {}  # source -> (last logged, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` (a ``py.warnings`` line) is written."""
        text = record.getMessage()
        source = text.split(": ", 2)[:2]  # "file:line", "Category"
        key = ":".join(source)
        now = time.monotonic()
        last, left_out = self._sources.get(key, (-math.inf, 0))
        if now - last < self.interval:
            self._sources[key] = (last, left_out + 1)
            return False
        if len(self._sources) >= self.MAX_SOURCES:
            self._sources.clear()
        self._sources[key] = (now, 0)
        record.msg, record.args = text.strip().splitlines()[0], None
        if left_out:
            record.not_logged_since_last = left_out
        return True


_warning_filter = _WarningRateLimit()

#: The lowest level written (set by `setup_logging`): DEBUG-only helpers check it first,
#: so a disabled line costs a comparison rather than a logger call.
_threshold = logging.INFO


def setup_logging(
    level: str = "INFO",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    traceback_locals: bool = False,
    logger_name: str = LOGGER_NAME,
) -> None:
    """Configure structlog and the standard library for this process.

    ``fmt`` is ``json`` (one object per line) or ``console`` (coloured, for people).
    Events logged through structlog (`get_logger`, their ``logger`` field
    ``logger_name``) are rendered by structlog and written directly (a disabled level
    is a no-op method; no standard-library record is made): about half the CPU of a
    line than through `logging`. The app's `logging` records, uvicorn's and libraries'
    go through the same processors and renderer (`structlog.stdlib.ProcessorFormatter`)
    to the same writer, so stdout never mixes formats. Uvicorn's access log is
    silenced: the middleware writes one access line per request.

    A traceback carries each frame's file, line and function, never its local
    variables: a frame's locals hold request headers (API keys, tokens) and request
    bodies. ``traceback_locals`` turns them on for debugging only; it writes secrets
    into the log.
    """
    global _threshold, _configured  # noqa: PLW0603 - process-wide, like logging's
    level = level.upper()
    if fmt == "json":
        final: list[Processor] = [
            _exceptions(
                structlog.processors.ExceptionRenderer(
                    structlog.tracebacks.ExceptionDictTransformer(show_locals=traceback_locals)
                )
            ),
            _json_line,
        ]
    else:
        final = [
            _strip_control,
            structlog.dev.ConsoleRenderer(
                colors=(stream or sys.stdout).isatty(),
                # Rich's formatter, when installed, would print locals: plain unless asked.
                exception_formatter=structlog.dev.default_exception_formatter
                if traceback_locals
                else structlog.dev.plain_traceback,
            ),
        ]
    writer = _writer_of(stream or sys.stdout)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            add_line_context,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _SharedWriterHandler(writer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi"):
        lib = logging.getLogger(name)
        for old in list(lib.handlers):
            lib.removeHandler(old)
        lib.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Python warnings are log lines too (not raw text on stderr), rate-limited per source.
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    if _warning_filter not in warnings_logger.filters:
        warnings_logger.addFilter(_warning_filter)
    _threshold = logging.getLevelName(level)
    structlog.configure(
        processors=[_named(logger_name), *final],
        logger_factory=lambda *_: writer,
        wrapper_class=structlog.make_filtering_bound_logger(_threshold),
        cache_logger_on_first_use=False,
    )
    _configured = structlog.get_logger().bind()
    if fmt == "json":
        if len(_direct) >= 64:  # a process that configures again and again: the oldest go
            del _direct[next(iter(_direct))]
        processors = structlog.get_config()["processors"]  # the list the logger holds
        _direct[id(_configured)] = _DirectLines(
            _configured, writer, _threshold, processors, list(processors), logger_name,
            orjson.dumps(logger_name).decode(),
        )  # fmt: skip


def reset_logging() -> None:
    """Undo `setup_logging`: no handler on the root logger, structlog's defaults."""
    global _threshold, _configured  # noqa: PLW0603 - `setup_logging`'s
    _configured = None
    _direct.clear()
    logging.getLogger().handlers.clear()
    logging.captureWarnings(False)
    logging.getLogger("py.warnings").removeFilter(_warning_filter)
    structlog.reset_defaults()
    _threshold = logging.INFO


#: The logger `setup_logging` made last, resolved (`configured_logger`).
_configured: structlog.typing.FilteringBoundLogger | None = None


class _DirectLines(NamedTuple):
    """A configured logger whose JSON lines `log_request_complete` writes itself: while
    its processor list (the configuration's own, which structlog's ``capture_logs``
    changes in place) holds what it held then."""

    logger: structlog.typing.FilteringBoundLogger
    writer: _Writer
    threshold: int
    processors: list[Processor]
    snapshot: list[Processor]
    name: str  # its lines' ``logger`` field (`setup_logging`'s ``logger_name``)
    name_json: str  # the same, as a line writes it


#: Each such logger, by its id (an app instrumented before the last configuration
#: keeps its own logger, writer and level).
_direct: dict[int, _DirectLines] = {}


def _direct_lines(logger: structlog.typing.FilteringBoundLogger) -> _DirectLines | None:
    """``logger``'s entry while its lines may be written directly (its processor list
    unchanged), else None (the entry holds its logger: an id never reused)."""
    direct = _direct.get(id(logger))
    if direct is None or direct.processors != direct.snapshot:
        return None
    return direct


def configured_logger() -> structlog.typing.FilteringBoundLogger:
    """The logger `setup_logging` configured, resolved once (a `get_logger` proxy
    resolves the configuration at every line), or `get_logger`'s when it has not run.
    `log_request_complete` renders its access lines with the same processors and
    writes them without structlog's layers between: the same line for about a fifth
    less CPU (`bench.library_overhead`)."""
    return _configured if _configured is not None else get_logger()


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger that goes through the configured processors (its lines'
    ``logger`` field: ``name``, or the one `setup_logging` set)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger.bind(logger=name) if name is not None else logger


def debug_enabled() -> bool:
    """Whether DEBUG lines are written: a DEBUG-only helper checks this first, so a
    disabled line costs a comparison rather than a logger call."""
    return _threshold <= logging.DEBUG


class LogContext:
    """Bind fields to every log line inside a ``with`` block (contextvars-based).

    Safe across ``await``; for threads, submit work with ``contextvars.copy_context()``.
    Fields whose value is ``None`` are not bound. The fields are structlog's contextvars
    (``bind_contextvars``), so an app's own ``bind_contextvars``, ``get_contextvars``
    and ``clear_contextvars`` see them, and the innermost binding of a name wins.
    """

    def __init__(self, **fields: Any) -> None:
        """Remember the fields to bind on entry."""
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._tokens: Mapping[str, contextvars.Token[Any]] = {}

    def __enter__(self) -> LogContext:
        """Bind the fields."""
        self._tokens = structlog.contextvars.bind_contextvars(**self._fields)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Restore the fields to what they were before the block (each token resets
        its own variable: what ``reset_contextvars`` does, without finding each
        variable again by name)."""
        for token in self._tokens.values():
            token.var.reset(token)


#: The fields of the request being served (`RequestLogContext`; the middleware sets it
#: itself, one call fewer).
REQUEST_FIELDS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "golden_signals_request_fields", default=MappingProxyType({})
)


class RequestLogContext:
    """The fields of the request being served (its id, its user's, its method), on
    every line logged while it is (the middleware binds them): one context variable
    of the library's own, set once a request, where `LogContext` sets one of
    structlog's per field. A field bound by `LogContext` or structlog's
    ``bind_contextvars`` wins over the request's of the same name, and an app's
    ``clear_contextvars`` (which structlog's documentation has an app call at the
    start of each request) leaves them: a request never loses its id. They are not
    in ``get_contextvars``; the request id is in the request's ASGI state
    (``request.state.request_id``). A block inside another replaces the outer one's
    fields until it ends. Fields whose value is None are not bound."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        """Remember the fields to bind on entry."""
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._token: contextvars.Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> RequestLogContext:
        """Bind the fields."""
        self._token = REQUEST_FIELDS.set(self._fields)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Restore the fields bound before the block."""
        if self._token is not None:
            REQUEST_FIELDS.reset(self._token)


def log_request_start(
    logger: structlog.typing.FilteringBoundLogger, method: str, endpoint: str
) -> None:
    """Log that a request began (DEBUG: the access line at completion is the record)."""
    if debug_enabled():
        logger.debug("Request started", method=method, endpoint=endpoint)


#: The standard methods as a line writes them (a line with another method is rendered
#: the general way: a method is the client's text).
_METHOD_JSON = {method: f'"{method}"' for method in HTTP_METHODS}
#: Route templates as a line writes them, by template (bounded: templates are the app's
#: code, and unmatched paths share one).
_endpoint_json: dict[str, str] = {}
_SAMPLED_JSON = {None: "", True: ',"trace_sampled":true', False: ',"trace_sampled":false'}
#: `write_request_line`'s line: what `log_request_complete` writes through the
#: configured logger's processors for the middleware's request, field for field.
_REQUEST_LINE = (
    '{"method":%s,"endpoint":%s,"status_code":%d,"duration_ms":%r%s,"logger":%s,'
    '"request_id":"%s"%s,"level":"%s","timestamp":"%s"%s,"pid":%d,'
    '"message":"Request completed"}'
)


def write_request_line(
    logger: structlog.typing.FilteringBoundLogger,
    method: str,
    endpoint: str,
    status_code: int,
    duration_ms: float,
    span: trace.Span,
    sampled: bool | None,
    request_fields: Mapping[str, str],
) -> bool:
    """The access line of a request the middleware served, when it is the common one:
    `log_request_complete`'s line (with ``trace_sampled`` unless ``sampled`` is None;
    no error; ``span`` current), written by the configured JSON logger, for the request
    whose bound fields (`REQUEST_FIELDS`) are still ``request_fields`` (its
    ``request_id``, ``method`` and, if any, ``user_id``: safe tokens), with no field
    bound in structlog's context variables, a standard method, a route template of at
    most 1,024 characters and a duration below 10¹⁵ ms. That line is formatted at once
    into one template, the same text field for field (the dictionary a line is
    otherwise built in, and its look at each value, cost about a sixth of the
    library's CPU a request; bench/library_overhead.py). Below ERROR the line's values
    wait, and it is formatted and written with the lines after it, several in one system
    call (`_Writer.defer`: a write was the costliest part of a line in a server, and the
    formatting costs less done for several lines at once, its code then in the
    processor's caches). False,
    with nothing written, for any other line: the caller writes it with
    `log_request_complete`."""
    direct = _direct_lines(logger)
    if direct is None:
        return False
    level = _INFO if status_code < 400 else _access_level(status_code)  # (most: no call)
    if level < direct.threshold:
        return True
    method_json = _METHOD_JSON.get(method)
    endpoint_json = _endpoint_json.get(endpoint)
    if endpoint_json is None and len(endpoint) <= 1024:
        try:
            endpoint_json = orjson.dumps(endpoint).decode()
        except orjson.JSONEncodeError:  # not valid Unicode (a lone surrogate)
            return False
        if len(_endpoint_json) < 4096:
            _endpoint_json[endpoint] = endpoint_json
    user_id = request_fields.get("user_id")
    if (
        (sampled is not None and type(sampled) is not bool)  # an app's own value
        or method_json is None
        or endpoint_json is None
        or REQUEST_FIELDS.get() is not request_fields
        or len(request_fields) != (2 if user_id is None else 3)
        or not 0.0 <= duration_ms < 1e15
        or type(status_code) is not int
        or _structlog_bound()
    ):
        return False
    ids = text_ids(span)
    line = (
        method_json, endpoint_json, status_code, duration_ms, sampled, direct.name_json,
        request_fields["request_id"], user_id, level, time.time_ns(), ids,
    )  # fmt: skip
    if level < logging.ERROR:  # formatted and written with the answers after it
        direct.writer.defer(line)
    else:  # a failure's line at once
        direct.writer.msg(_render_request_line(line))
    return True


#: An access line's values, as `write_request_line` takes them and `_render_request_line`
#: formats them: method and endpoint as JSON, status, duration in ms, tail sampling's
#: ruling, the logger's name as JSON, request id, user id, level, time (ns since the
#: epoch), and the span's `hex_ids`.
_RequestLine = tuple[
    str, str, int, float, bool | None, str, str, str | None, int, int, tuple[str, str, int] | None
]


def _render_request_line(line: _RequestLine) -> str:
    """The text of an access line (`write_request_line`)."""
    (
        method_json, endpoint_json, status_code, duration_ms, sampled, logger_json, request_id,
        user_id, level, now_ns, ids,
    ) = line  # fmt: skip
    ids_json = ""
    if ids is not None:
        ids_json = ',"trace_id":"%s","span_id":"%s","trace_flags":"%s"' % (  # noqa: UP031
            ids[0], ids[1], flags_text(ids[2], sampled),
        )  # fmt: skip
    user_json = "" if user_id is None else ',"user_id":"%s"' % user_id  # noqa: UP031
    return _REQUEST_LINE % (
        method_json, endpoint_json, status_code, round(duration_ms, 3), _SAMPLED_JSON[sampled],
        logger_json, request_id, user_json, logging.getLevelName(level), _timestamp(now_ns),
        ids_json, _pid,
    )  # fmt: skip


def _structlog_bound() -> bool:
    """Whether any field is bound in structlog's context variables (True when that
    cannot be told: `merge_structlog_context` would fall back)."""
    registry = _STRUCTLOG_VARS
    if type(registry) is not dict:
        return True
    if not registry:  # nothing bound in this process yet
        return False
    try:
        return any(var.get() is not Ellipsis for var in registry.values())
    except RuntimeError:  # a name bound for the first time meanwhile, in a thread
        return True


def log_request_complete(
    logger: structlog.typing.FilteringBoundLogger,
    method: str,
    endpoint: str,
    status_code: int,
    duration_ms: float,
    exc_info: BaseException | None = None,
    *,
    expected: bool = False,
    level: int | None = None,
    current_span: trace.Span | None = None,
    **fields: Any,
) -> None:
    """The one access log line of a request; level follows the status class, unless
    ``level`` is given (a protocol whose codes are not HTTP's, such as gRPC).

    Errors ride on this line (``error_type``, ``error``, and the traceback of an
    unexpected exception in ``exception``), so each failed request logs exactly once.
    An expected error (``expected``: among 5xx, a 503/504 the service chose, to shed
    load or while not ready) is a WARNING, not an ERROR: it is the service protecting
    itself, and its metrics and symptom alerts are where it shows. ``current_span``:
    the span current now, when the caller holds it (a context lookup spared).
    """
    if level is None:
        level = _access_level(status_code, expected)
    direct = _direct_lines(logger)
    if direct is not None and exc_info is None:
        # The configured logger's own processors, called here: the same line.
        if level >= direct.threshold:
            name = _METHOD_NAMES[level]
            line = {
                "method": method, "endpoint": endpoint, "status_code": status_code,
                "duration_ms": round(duration_ms, 3), **fields, "event": "Request completed",
            }  # fmt: skip
            line.setdefault("logger", direct.name)
            direct.writer.msg(_sanitized_json_line(_bound_fields(None, name, line, current_span)))
        return
    if exc_info is not None:
        fields["exc_info"] = exc_info
    logger.log(
        level,
        "Request completed",
        method=method,
        endpoint=endpoint,
        status_code=status_code,
        duration_ms=round(duration_ms, 3),
        **fields,
    )
