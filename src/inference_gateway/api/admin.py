"""Who may change what is served: the ``ADMIN_TOKEN`` check, for every protocol, and
the bearer-token and digest helpers the API keys share.

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


def secret_digest(secret: str) -> bytes:
    """The SHA-256 digest secrets are compared by (`hmac.compare_digest` of digests: the
    time taken says nothing of a secret's content or length)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


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
    given = bearer_token(authorization)
    if given is None:
        raise UnauthenticatedException(
            "The model repository extension needs 'Authorization: Bearer <ADMIN_TOKEN>'."
        )
    expected = secret_digest(settings.admin_token.get_secret_value())
    if not hmac.compare_digest(expected, secret_digest(given)):
        raise UnauthenticatedException("The bearer token is not the server's ADMIN_TOKEN.")
