"""The ASGI face's side of `core.after_response`: run deferred work once the app has
sent its response (under uvicorn, the client has the whole answer by then)."""

from __future__ import annotations

from typing import Any

from core import after_response


class AfterResponseMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owned = after_response.SCOPE_KEY not in scope  # else the streaming runtime runs it
        queue: list[after_response.Work] = scope.setdefault(after_response.SCOPE_KEY, [])
        token = after_response.bind(queue)
        try:
            await self.app(scope, receive, send)
        finally:
            after_response.unbind(token)
        if owned:
            await after_response.run(queue)
