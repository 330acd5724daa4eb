"""Pure ASGI middleware: the body size limit and the last-resort error shield.

Both sit outside FastAPI's routing so that they cover every route, including the
framework's own 404 and 405, and speak OpenAI's error shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core import telemetry
from core.errors import ApiError, internal_error, too_large

logger = logging.getLogger("threadline.http")

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Any

MAX_BODY_BYTES = 1024 * 1024


async def send_error(send: Any, error: ApiError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    telemetry.note(error_code=error.code or str(error.status))
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with a 413, decided from `Content-Length` and
    from the bytes actually read (a chunked or lying client is cut off too).

    The body is read here, before the app runs, and replayed to it: no route can
    start work (or write anything) on a body that turns out to be too large.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            await self.app(scope, receive, send)
            return
        error = too_large(f"The request body is larger than the limit of {self.max_bytes:,} bytes.")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        # bytes.isdigit() is ASCII-only; the length test spares int() a 5,000-digit value.
        if declared is not None and declared.isdigit() and (len(declared) > 15 or int(declared) > self.max_bytes):
            await send_error(send, error)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, error)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)


class ErrorShieldMiddleware:
    """Any exception that escapes the app becomes a 500 in OpenAI's shape, never a
    traceback; the traceback goes to the log only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error")
            if not started:
                await send_error(send, internal_error())
