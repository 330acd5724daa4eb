"""Work after the response: a seam between the service and the faces (issue 12).

The service queues work that must not delay an answer (compaction) with `defer`; the
face that serves the request runs it once the response has been sent:

- the ASGI face (`handler.after_response.AfterResponseMiddleware`, under uvicorn or
  any ASGI server) after the app has sent the last byte, like a Starlette background
  task;
- the Lambda streaming runtime after the streamed response has ended and before it
  asks for the next invocation (`/next`): Lambda bills that time, and the execution
  environment takes no other request meanwhile (docs/deployment.md).

Outside any face (a script calling the service), deferred work runs as a task of the
running loop. Work that fails is logged and never reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token

logger = logging.getLogger("threadline.after_response")

Work = Callable[[], Awaitable[None]]
SCOPE_KEY = "threadline.after_response"
"""Where a face that runs the work itself (the streaming runtime) puts the ASGI
request's list, so the middleware binds it instead of running it."""

_queue: ContextVar[list[Work] | None] = ContextVar("after_response", default=None)
_orphans: set[asyncio.Task[None]] = set()


def bind(queue: list[Work]) -> Token[list[Work] | None]:
    """Make `queue` the current request's list (the face's side)."""
    return _queue.set(queue)


def unbind(token: Token[list[Work] | None]) -> None:
    _queue.reset(token)


def defer(work: Work) -> None:
    """Run `work` after the current response has been sent."""
    queue = _queue.get()
    if queue is not None:
        queue.append(work)
        return
    task = asyncio.get_running_loop().create_task(run([work]))
    _orphans.add(task)
    task.add_done_callback(_orphans.discard)


async def run(queue: list[Work]) -> None:
    """Run queued work in order (work queued meanwhile included); failures are logged."""
    while queue:
        work = queue.pop(0)
        try:
            await work()
        except Exception:
            logger.exception("work after the response failed")
