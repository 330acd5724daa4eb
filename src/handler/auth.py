"""API keys and principals: `Authorization: Bearer <key>`, checked in constant time.

Each key belongs to a principal, the owner of what its requests store: a name given in
the keys' configuration, or the key's derived name (`handler.principals`). The key
itself is never stored or logged, only its digest. Keys come from `API_KEYS` locally, or
from a Secrets Manager secret when deployed (`handler.keyring`: re-read after
`API_KEYS_MAX_AGE_SECONDS`, never trusted past `API_KEYS_MAX_STALE_SECONDS` while reads
fail). With no keys at all the service runs open, says so loudly, and refuses to start
inside Lambda.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import ApiError
from core.settings import Settings
from handler.deps import OPEN_PRINCIPAL
from handler.keyring import KeyRing
from handler.middleware import send_error
from handler.principals import KeyConfigError, principal_id

__all__ = ["AuthMiddleware", "KeyConfigError", "KeyRing", "OpenServiceRefused", "check_startup", "principal_id"]

logger = logging.getLogger("threadline.auth")

PUBLIC_PATHS = frozenset({"/", "/health", "/v1/health", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


class OpenServiceRefused(RuntimeError):
    """Raised at start inside Lambda when no API key is configured."""


def check_startup(settings: Settings) -> None:
    """Warn when open; refuse to run open inside Lambda."""
    if settings.requires_keys:
        return
    if settings.in_lambda:
        raise OpenServiceRefused(
            "No API keys configured (API_KEYS or API_KEYS_SECRET_ARN): refusing to serve an open API from Lambda."
        )
    logger.warning("API_KEYS is empty: the API is open to anyone who can reach it (local use only).")


class AuthMiddleware:
    """Establishes `scope["state"]["principal"]` or answers 401 in OpenAI's shape."""

    def __init__(self, app: Any, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        state = scope.setdefault("state", {})
        if self.keyring.open:
            state["principal"] = OPEN_PRINCIPAL
            await self.app(scope, receive, send)
            return
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)  # no principal: these routes own no data
            return
        presented = _bearer(scope)
        if presented is None:
            await self._refuse(send, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
            return
        try:
            principal = (await self.keyring.table()).principal_for(presented)
        except ApiError as error:
            await send_error(send, error)
            return
        if principal is None:
            await self._refuse(send, "Incorrect API key provided.")
            return
        state["principal"] = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Any, message: str) -> None:
        await send_error(send, ApiError(401, message, code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None
