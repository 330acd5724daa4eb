"""Server-sent events for chat completions, as OpenAI's clients parse them.

Frames are `data: {json}` and a blank line, ending with `data: [DONE]`; never `id:`
or `retry:` fields (the Python SDK chokes on them). While the model is quiet, a
`: keepalive` comment goes out every `keepalive_seconds` so proxies (API Gateway's
idle timeout) keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import suppress
from typing import Any, TypeVar, cast

from core import telemetry
from core.errors import ApiError, internal_error

logger = logging.getLogger("threadline.sse")

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_SECONDS = 15.0
_END = object()


def data_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def with_keepalive(source: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """Yield the source's items, and None whenever it has been quiet for `interval` s.

    The source runs in a task of its own for its whole life, so cancellation scopes
    inside it stay in one task; when the consumer stops (a client disconnect), that
    task is cancelled, which closes the source and, through it, the model call.
    """
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((item, None))
            await queue.put((_END, None))
        except Exception as error:
            await queue.put((_END, error))
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item, error = await asyncio.wait_for(queue.get(), timeout=interval)
            except TimeoutError:
                yield None
                continue
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


async def open_chat_stream(
    chunks: AsyncIterator[dict[str, Any]], keepalive_seconds: float = KEEPALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """Start a chat completion stream; return its SSE frames.

    Waits for the model's first event (or the first keepalive tick) before returning,
    so a failure before any token (a 429 upstream, say) is raised here as an
    `ApiError` and becomes a proper HTTP error status; a failure later becomes an
    error frame in the stream.
    """
    events = with_keepalive(chunks, keepalive_seconds)
    head: list[dict[str, Any] | None] = []
    async for item in events:  # the role chunk, then the first model event or a tick
        head.append(item)
        if item is None or len(head) == 2:
            break
    return _frames(head, events)


async def _frames(
    head: list[dict[str, Any] | None], rest: AsyncIterator[dict[str, Any] | None]
) -> AsyncIterator[bytes]:
    async def items() -> AsyncIterator[dict[str, Any] | None]:
        for item in head:
            yield item
        async for item in rest:
            yield item

    try:
        async for item in items():
            yield KEEPALIVE if item is None else data_frame(item)
        yield DONE
    except ApiError as error:
        telemetry.note(error_code=error.code or str(error.status))
        yield data_frame(error.body())
    except Exception:
        logger.exception("stream failed")
        telemetry.note(error_code="internal_error")
        yield data_frame(internal_error().body())
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


Recorded = tuple[int, str]
"""A recorded event: its sequence number and its JSON (`core.resumable`)."""
Ticks = AsyncGenerator[Recorded | None, None]


def ticking(events: AsyncIterator[Recorded], keepalive_seconds: float) -> Ticks:
    """Recorded events, and None for each quiet `keepalive_seconds`."""
    return cast(Ticks, with_keepalive(events, keepalive_seconds))


async def recorded_frames(
    head: list[Recorded | None], rest: Ticks, render: Callable[[str], bytes]
) -> AsyncIterator[bytes]:
    """The SSE frames of a recorded answer (`head`, already read, then `rest`), each
    event's JSON framed by `render` as it was recorded, never parsed again. A store that
    fails mid-way ends the stream (logged): the client resumes from what it has."""
    try:
        for item in head:
            yield KEEPALIVE if item is None else render(item[1])
        async for item in rest:
            yield KEEPALIVE if item is None else render(item[1])
    except Exception:
        logger.exception("following a recorded answer failed")
    finally:
        await rest.aclose()
