"""API keys and principals: `Authorization: Bearer <key>`, checked in constant time.

Each key is a principal; what a principal owns is keyed by a hash of its key, so
the key itself is never stored or logged. Keys come from `API_KEYS` locally, or
from a Secrets Manager secret when deployed (read with a botocore client, see
`core.secrets`, and trusted for `API_KEYS_MAX_AGE_SECONDS`, so a rotated key takes effect
without a redeploy). With no keys at all the service runs open, says so loudly,
and refuses to start inside Lambda.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import anyio

from core.errors import ApiError
from core.settings import Settings
from handler.deps import OPEN_PRINCIPAL
from handler.middleware import send_error

logger = logging.getLogger("threadline.auth")

PUBLIC_PATHS = frozenset({"/", "/health", "/v1/health", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


def principal_id(key: str) -> str:
    """A stable, non-reversible name for the holder of `key`."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def match_key(presented: str, keys: tuple[str, ...]) -> str | None:
    """The key equal to `presented`, compared in constant time: fixed-length digests,
    and every key is compared whatever the outcome."""
    presented_digest = _digest(presented)
    found: str | None = None
    for key in keys:
        if hmac.compare_digest(presented_digest, _digest(key)):
            found = key
    return found


class OpenServiceRefused(RuntimeError):
    """Raised at start inside Lambda when no API key is configured."""


class KeyRing:
    def __init__(self, settings: Settings, *, clock: Any = time.monotonic) -> None:
        self.static_keys = settings.api_keys
        self.secret_arn = settings.api_keys_secret_arn
        self.max_age = settings.api_keys_max_age_seconds
        self.clock = clock
        self._cached: tuple[str, ...] = ()
        self._fetched_at: float | None = None

    @property
    def open(self) -> bool:
        return not self.static_keys and not self.secret_arn

    async def keys(self) -> tuple[str, ...]:
        if not self.secret_arn:
            return self.static_keys
        fresh = self._fetched_at is not None and self.clock() - self._fetched_at < self.max_age
        if not fresh:
            self._cached = await anyio.to_thread.run_sync(self._fetch)
            self._fetched_at = self.clock()
        return self._cached

    def _fetch(self) -> tuple[str, ...]:
        from core.secrets import read_secret

        assert self.secret_arn is not None
        try:
            text = read_secret(self.secret_arn)
        except Exception:
            logger.exception("could not read the API keys secret")
            if self._cached:
                return self._cached  # keep serving with the keys we had
            raise ApiError(503, "The service cannot check API keys right now.", code="service_unavailable") from None
        return tuple(key.strip() for key in text.replace("\n", ",").split(",") if key.strip())


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
            key = match_key(presented, await self.keyring.keys())
        except ApiError as error:
            await send_error(send, error)
            return
        if key is None:
            await self._refuse(send, "Incorrect API key provided.")
            return
        state["principal"] = principal_id(key)
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
