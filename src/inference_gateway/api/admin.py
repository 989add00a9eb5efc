"""Who may change what is served: the ``ADMIN_TOKEN`` check, for every protocol.

The model repository extension (load, unload, index; REST and gRPC) changes or reveals
what the gateway serves, so it is off unless ``ADMIN_TOKEN`` is set, and then needs
``Authorization: Bearer <token>``. The token is compared by its SHA-256 digest with
`hmac.compare_digest`, so neither its content nor its length shows in the time an
answer takes; it is never logged, and no answer repeats it.
"""

from __future__ import annotations

import hashlib
import hmac

from inference_gateway.config import Settings
from inference_gateway.errors import ExtensionDisabledException, UnauthenticatedException

#: The scheme of the ``Authorization`` header the admin calls take.
SCHEME = "bearer"


def require_admin(settings: Settings, authorization: str | None) -> None:
    """Pass when ``authorization`` (the header's or metadata's value) carries the
    server's ``ADMIN_TOKEN``.

    Raises:
        ExtensionDisabledException: The server was started without ``ADMIN_TOKEN``.
        UnauthenticatedException: No bearer token, or a wrong one.
    """
    if settings.admin_token is None:
        raise ExtensionDisabledException(
            "The model repository extension is off: the server was started without ADMIN_TOKEN."
        )
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != SCHEME or not given.strip():
        raise UnauthenticatedException(
            "The model repository extension needs 'Authorization: Bearer <ADMIN_TOKEN>'."
        )
    expected = hashlib.sha256(settings.admin_token.get_secret_value().encode()).digest()
    offered = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(expected, offered):
        raise UnauthenticatedException("The bearer token is not the server's ADMIN_TOKEN.")
