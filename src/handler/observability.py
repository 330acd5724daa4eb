"""The ASGI side of telemetry: opens each request's record and emits it at the end.

Added only when `TELEMETRY` is on, so with it off a request pays nothing at all.
"""

from __future__ import annotations

from typing import Any

from core import telemetry


class TelemetryMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = scope.get("aws.context")
        record = telemetry.begin(scope["method"], "unmatched", getattr(context, "aws_request_id", None))

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            record.route = str(getattr(route, "path", "unmatched"))
            record.principal = (scope.get("state") or {}).get("principal")
            telemetry.emit(record)
