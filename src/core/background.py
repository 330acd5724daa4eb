"""Background jobs: work that must run to its end apart from the request that asked
for it (issue 13: a background response).

A job is a small JSON payload, `{"threadline_job": {"kind": ..., ...}}`. Where it runs
is the dispatcher's choice:

- `InProcessDispatcher` (`make run`, tests): a task of the server's own event loop.
- `LambdaDispatcher` (`core.background_lambda`, deployed): an asynchronous invocation
  of this same function (`InvocationType=Event`), whose handler sees the payload and
  runs the job (`handler.jobs`) instead of serving an HTTP event.

A job must be safe to run twice or never: Lambda retries an asynchronous invocation
that failed and may, rarely, deliver one twice. The Responses job claims its response
with a conditional write first (`core.store.events.DynamoDBEventLog.claim`); a run
that never starts is ended as failed by its first reader once its queue time is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

logger = logging.getLogger("threadline.background")

JOB_KEY = "threadline_job"
RESPONSE_JOB = "response"


def response_job(owner: str, response_id: str) -> dict[str, Any]:
    return {JOB_KEY: {"kind": RESPONSE_JOB, "owner": owner, "response_id": response_id}}


def is_job(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get(JOB_KEY), dict)


class Dispatcher(Protocol):
    async def dispatch(self, job: dict[str, Any]) -> None:
        """Have `job` run elsewhere; returns once it is handed over (not done)."""
        ...


class InProcessDispatcher:
    """Runs each job as a task of the running loop (kept referenced until it ends)."""

    def __init__(self, run: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        self._run = run
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch(self, job: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, job: dict[str, Any]) -> None:
        try:
            await self._run(job)
        except Exception:
            logger.exception("background job failed", extra={"job": job.get(JOB_KEY, {}).get("kind")})
