"""The ASGI types, spelled out here so that the library needs no framework at run time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The HTTP methods a metric's label and a span's name carry as they are (RFC 9110's and
#: PATCH, as OpenTelemetry's conventions list them). Any other is the client's own text
#: (a scanner's ``SCAN0``), unbounded: `OTHER_METHOD` in labels, ``HTTP`` in span names.
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: What a metric's ``method`` label and a span's ``http.request.method`` say for a method
#: outside `HTTP_METHODS` (OpenTelemetry's value).
OTHER_METHOD = "_OTHER"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the request header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def route_path(scope: Scope) -> str:
    """The request's path without the ``root_path`` a proxy or server put before it
    (as the app's routes see it)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        return path[len(root_path) :] or "/"
    return path
