"""Optional API keys: who may ask for predictions (``API_KEYS_FILE``).

The file holds one ``key-id:sha256-hex-of-the-key`` line per key (``#`` comments and
blank lines allowed); `inference-gateway keys add NAME` writes one and prints the key
once. With a file set, the prediction routes (``/predict``, ``/models/...``), the Open
Inference Protocol (``/v2/...``, and gRPC) need ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; the health probes (``/health``, ``/ready``, ``/v2/health/live``,
``/v2/health/ready``, gRPC ``ServerLive``/``ServerReady``), ``/metrics`` and the API's own
description (``/docs``, ``/openapi.json``) stay open for probes and scrapers, and the
page (``/``, ``/ui/...``) for browsers, which load it without a key: it asks a person
for one and sends it on its own API calls.

A key offered is hashed once and compared with every stored hash by
`hmac.compare_digest`, without stopping at a match, so the time an answer takes says
nothing about which keys exist. Only the key id (never the key) reaches the access log
(``api_key_id``); it is not a metric label, since a file can hold any number of keys.
The file is read again when it changes (checked at most once a second), so keys are
added and revoked without a restart.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.typing import FilteringBoundLogger

from inference_gateway.api.admin import bearer_token, secret_digest
from inference_gateway.api.problems import gateway_exception_response
from inference_gateway.api.ui import is_page_path
from inference_gateway.api.v2.routes import error_response
from inference_gateway.errors import UnauthenticatedException
from inference_gateway.observability.metrics import Metrics

#: A key id: what the access log shows.
KEY_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")
#: How often the file's modification is checked (seconds).
RELOAD_CHECK_SECONDS = 1.0
#: Health probes, on both protocols' paths: orchestrators send no key.
PROBE_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready"})
#: Paths open without a key: probes, scrapes and the API's description.
OPEN_PATHS = PROBE_PATHS | {"/metrics", "/docs", "/openapi.json"}


class KeysFileError(ValueError):
    """A line of the keys file is not ``key-id:sha256-hex``."""


def parse_keys(text: str, source: str = "API_KEYS_FILE") -> dict[str, bytes]:
    """Key id → SHA-256 digest, from the file's text.

    Raises:
        KeysFileError: A line that is not ``key-id:64-hex-digits``, or a repeated id.
    """
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, _, hexdigest = line.partition(":")
        if not KEY_ID.fullmatch(key_id) or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
            raise KeysFileError(f"{source}, line {number}: expected key-id:sha256-hex")
        if key_id in keys:
            raise KeysFileError(f"{source}, line {number}: key id {key_id!r} appears twice")
        keys[key_id] = bytes.fromhex(hexdigest)
    return keys


#: What changes when the keys file does: inode, mtime, ctime (a chmod), size.
_Stamp = tuple[int, int, int, int]


@dataclass(slots=True)
class _Loaded:
    keys: dict[str, bytes]
    stamp: _Stamp
    checked: float
    at: float  # time.time() of the read


@dataclass(frozen=True, slots=True)
class _Failure:
    """A version of the file that could not be read (``stamp`` None: not even stat)."""

    stamp: _Stamp | None
    message: str
    since: float  # time.time()


@dataclass(frozen=True, slots=True)
class KeysFileState:
    """What ``/ready`` says of the keys file: when it was last read, how many keys it
    held, and why a later change could not be read (never a key, nor the file's path)."""

    loaded_at: str  # ISO 8601, UTC
    keys: int
    error: str | None = None
    error_since: str | None = None


def _stamp(stat: os.stat_result) -> _Stamp:
    """What changes when the file does: replaced, written, or its permissions fixed."""
    return stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class ApiKeys:
    """The keys of ``API_KEYS_FILE``, read again when the file changes.

    A change that cannot be read (a malformed line, a deleted or unreadable file) keeps
    the keys last read in force — a typo must not open the gateway nor lock everyone
    out — and says so: one ERROR line and one count per broken version of the file, and
    the error in `state` (``/ready``) until a good version is read.
    """

    def __init__(
        self,
        path: Path,
        logger: FilteringBoundLogger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Read ``path`` now (an unreadable or malformed file fails the start); later
        failures to read it are logged to ``logger`` and counted in ``metrics``.

        Raises:
            OSError: The file cannot be read.
            KeysFileError: A malformed line.
        """
        self.path = path
        self._logger = logger
        self._metrics = metrics
        self._loaded = self._read()
        self._failure: _Failure | None = None  # the version read last failed to read

    def _read(self) -> _Loaded:
        stat = self.path.stat()
        text = self.path.read_text(encoding="utf-8")
        keys = parse_keys(text, self.path.name)  # no directory: the state is shown on /ready
        return _Loaded(keys, _stamp(stat), time.monotonic(), time.time())

    def _current(self) -> dict[str, bytes]:
        """The keys, re-read when the file changed (a broken edit keeps the old keys)."""
        loaded = self._loaded
        now = time.monotonic()
        if now - loaded.checked >= RELOAD_CHECK_SECONDS:
            loaded.checked = now
            try:
                stat = self.path.stat()
            except OSError as exc:
                self._failed(None, f"API_KEYS_FILE cannot be read ({type(exc).__name__})")
                return loaded.keys
            stamp = _stamp(stat)
            if stamp == loaded.stamp:  # the file read last is back (or never left)
                self._failure = None
            elif self._failure is None or stamp != self._failure.stamp:
                try:
                    self._loaded = loaded = self._read()
                except (OSError, ValueError) as exc:  # KeysFileError, UnicodeDecodeError
                    detail = str(exc) if isinstance(exc, KeysFileError) else type(exc).__name__
                    self._failed(stamp, detail)
                else:
                    self._failure = None
        return loaded.keys

    def _failed(self, stamp: _Stamp | None, message: str) -> None:
        """Say once per broken version of the file that it could not be read."""
        if self._failure is not None and self._failure.stamp == stamp:
            return
        self._failure = _Failure(stamp, message, time.time())
        if self._metrics is not None:
            self._metrics.record_api_keys_reload_failure()
        if self._logger is not None:
            self._logger.error(
                "API keys file could not be read; the keys last read stay in force",
                path=str(self.path),
                error=message,
                keys=len(self._loaded.keys),
            )

    def state(self) -> KeysFileState:
        """When the keys in force were read, how many, and the error of a later change."""
        self._current()
        loaded, failure = self._loaded, self._failure
        return KeysFileState(
            loaded_at=_iso(loaded.at),
            keys=len(loaded.keys),
            error=failure.message if failure is not None else None,
            error_since=_iso(failure.since) if failure is not None else None,
        )

    def identify(self, authorization: str | None, api_key: str | None) -> str:
        """The id of the key a request offers (``Authorization: Bearer`` or
        ``X-API-Key``).

        Raises:
            UnauthenticatedException: No key, or one that is not in the file.
        """
        offered = api_key.strip() if api_key else bearer_token(authorization)
        if not offered:
            raise UnauthenticatedException(
                "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'."
            )
        digest = secret_digest(offered)
        found: str | None = None
        for key_id, stored in self._current().items():
            if hmac.compare_digest(digest, stored) and found is None:
                found = key_id
        if found is None:
            raise UnauthenticatedException("The API key is not valid.")
        return found


def needs_key(path: str) -> bool:
    """Whether a request for ``path`` must carry an API key (when keys are on)."""
    return path not in OPEN_PATHS and not is_page_path(path)


def add_key(path: Path, key_id: str) -> str:
    """Append a new random key named ``key_id`` to the keys file; return the key (it is
    stored only as its hash: this is the one time it is seen).

    Raises:
        KeysFileError: A malformed id, one already in the file, or a malformed file.
    """
    if not KEY_ID.fullmatch(key_id):
        raise KeysFileError(f"key id {key_id!r}: use letters, digits and . _ @ - (at most 64)")
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if key_id in parse_keys(existing, str(path)):
        raise KeysFileError(f"{path}: key id {key_id!r} exists already")
    key = secrets.token_urlsafe(32)
    separator = "" if not existing or existing.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as file:
        file.write(f"{separator}{key_id}:{secret_digest(key).hex()}\n")
    return key


class ApiKeyMiddleware:
    """Refuse requests without a valid key (401, ``WWW-Authenticate``) on the paths that
    need one; remember the key id for the access line. Inside the observability
    middleware, so a refusal is counted and logged like any other answer."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        """Guard ``app`` with ``keys``."""
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key of an HTTP request on a guarded path, then pass it on."""
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", ()) if k in _KEY_HEADERS}
        state = scope.setdefault("state", {})
        try:
            state["api_key_id"] = self.keys.identify(
                headers.get(b"authorization"), headers.get(b"x-api-key")
            )
        except UnauthenticatedException as exc:
            state["error"] = exc
            response = (
                error_response(exc) if scope["path"].startswith("/v2") else _problem(exc, state)
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


_KEY_HEADERS = (b"authorization", b"x-api-key")


def _problem(exc: UnauthenticatedException, state: dict[str, object]) -> Response:
    request_id = state.get("request_id")
    return gateway_exception_response(exc, request_id if isinstance(request_id, str) else None)
