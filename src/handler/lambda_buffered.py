"""The Lambda entry for buffered events: API Gateway REST (1.0), HTTP API (2.0),
Function URLs and ALB, through Mangum. Mangum buffers the whole response; the
streaming runtime serves streamed responses in production."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from handler.app import app
from handler.lambda_events import sanitized


class _Handler(Mangum):
    """Mangum, on events whose client-controlled values cannot crash it (see lambda_events)."""

    def __call__(self, event: Any, context: Any) -> Any:
        return super().__call__(sanitized(event), context)


handler = _Handler(app, lifespan="off")
