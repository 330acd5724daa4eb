"""The Lambda entry for buffered events: API Gateway REST (1.0), HTTP API (2.0),
Function URLs and ALB, through Mangum. Mangum buffers the whole response; the
streaming runtime serves streamed responses in production.

A background job (`handler.jobs`: this function invoking itself asynchronously)
bypasses Mangum: it runs on the same event loop Mangum uses (the services it caches
may hold loop-bound clients), its deferred work runs before the handler returns (the
managed runtime asks for the next event as soon as it does), and a job that raises
fails the invocation, so Lambda's retry policy applies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mangum import Mangum

from core import after_response
from handler.app import app
from handler.jobs import is_job_event, run_job_event
from handler.lambda_events import sanitized

logger = logging.getLogger("threadline.jobs")


class _Handler(Mangum):
    """Mangum, on events whose client-controlled values cannot crash it (see lambda_events),
    and background jobs beside it."""

    def __call__(self, event: Any, context: Any) -> Any:
        if is_job_event(event):
            return asyncio.get_event_loop().run_until_complete(self._job(event))
        return super().__call__(sanitized(event), context)

    async def _job(self, event: dict[str, Any]) -> dict[str, Any]:
        deferred: list[after_response.Work] = []
        try:
            result = await run_job_event(self.app, event, deferred)
        except Exception:
            logger.exception("The background job failed; Lambda may retry it")
            raise
        await after_response.run(deferred)
        return result


handler = _Handler(app, lifespan="off")
