"""Cancel the model call when the client leaves before the stream has begun.

Once a stream is flowing, Starlette's `StreamingResponse` notices a disconnect and
cancels the body (and with it the model call). Before that, while the route waits
for the model's first event to choose between an HTTP error status and a stream,
nobody listens: a client that gave up would leave the model running until its
timeout. This waits for both, and cancels the opening if the client goes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client went away; nobody receives it."""


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, opening: Awaitable[T]) -> T | Response:
    """`opening`'s result, or a 499 response if the client disconnected first (the
    opening is then cancelled, which closes the model call)."""
    opening_task = asyncio.ensure_future(opening)
    leaving = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({opening_task, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
    if not opening_task.done():
        opening_task.cancel()
        with suppress(asyncio.CancelledError):
            await opening_task
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return opening_task.result()
