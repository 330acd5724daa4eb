"""CORS for browser clients on other origins, from `CORS_ORIGINS`.

Our own small middleware rather than Starlette's because the contract is precise:
preflights are answered before auth; origins that are not allowed get no CORS
headers at all (Starlette's adds some, with a plain-text 400); every response to
an allowed origin, errors and streams included, exposes `X-Hermes-Session-Id`; and
the SDKs' `x-stainless-*` headers are allowed by prefix.
"""

from __future__ import annotations

from typing import Any

from core.sessions import RESUMABLE_HEADER, SESSION_HEADER, STREAM_ID_HEADER

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "idempotency-key",
        SESSION_HEADER.lower(),
        RESUMABLE_HEADER.lower(),
        "openai-organization",
        "openai-project",
        "openai-beta",
        "accept",
        "user-agent",
    }
)
ALLOWED_HEADER_PREFIXES = ("x-stainless-",)
EXPOSED_HEADERS = f"{SESSION_HEADER}, {STREAM_ID_HEADER}"
MAX_AGE_SECONDS = "600"


def header_allowed(name: str) -> bool:
    name = name.strip().lower()
    return name in ALLOWED_HEADERS or name.startswith(ALLOWED_HEADER_PREFIXES)


class CorsMiddleware:
    def __init__(self, app: Any, origins: tuple[str, ...]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    def allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (self.any_origin or self.origins):
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers") or []}
        origin = headers.get(b"origin", b"").decode("latin-1")
        is_preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers
        if is_preflight:
            await self._preflight(send, origin, headers.get(b"access-control-request-headers", b"").decode("latin-1"))
            return
        if not origin or not self.allowed(origin):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self._origin_headers(origin)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _origin_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
            (b"vary", b"Origin"),
        ]

    async def _preflight(self, send: Any, origin: str, requested: str) -> None:
        headers: list[tuple[bytes, bytes]] = [(b"content-length", b"0")]
        if origin and self.allowed(origin):
            granted = [name.strip() for name in requested.split(",") if name.strip() and header_allowed(name)]
            headers += [
                *self._origin_headers(origin),
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", ", ".join(granted).encode("latin-1")),
                (b"access-control-max-age", MAX_AGE_SECONDS.encode()),
            ]
        else:
            headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
