"""Server-sent events for the Responses API: `event: <type>` and `data: <json>` frames.

Each event carries its `sequence_number` (from 0). While the model is quiet a
`: keepalive` comment goes out (as for chat completions); never `id:` or `retry:`
fields.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from core.responses.service import PreparedResponse
from core.sse import KEEPALIVE, KEEPALIVE_SECONDS, with_keepalive

logger = logging.getLogger("threadline.responses.sse")

_OPENING = frozenset({"response.created", "response.in_progress"})


def event_frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


async def open_response_stream(
    events: AsyncIterator[dict[str, Any]],
    prepared: PreparedResponse,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    """Start a Responses stream; return its frames.

    Waits for the first event past `response.created` / `response.in_progress` (or
    the first keepalive tick) before returning, so a model that fails before its
    first token (a 429 upstream, say) is answered with that HTTP status instead of a
    stream; a failure later is a `response.failed` event.
    """
    ticks = cast(AsyncGenerator[dict[str, Any] | None, None], with_keepalive(events, keepalive_seconds))
    head: list[dict[str, Any] | None] = []
    async for item in ticks:
        head.append(item)
        if item is None or item["type"] not in _OPENING:
            break
    last = head[-1] if head else None
    if last is not None and last["type"] == "response.failed" and prepared.failure is not None:
        await ticks.aclose()
        raise prepared.failure
    return _frames(head, ticks)


async def _frames(
    head: list[dict[str, Any] | None], rest: AsyncGenerator[dict[str, Any] | None, None]
) -> AsyncIterator[bytes]:
    try:
        for item in head:
            yield KEEPALIVE if item is None else event_frame(item)
        async for item in rest:
            yield KEEPALIVE if item is None else event_frame(item)
    except Exception:
        # The service turns every failure into `response.failed`; this is a last resort.
        logger.exception("response stream failed")
    finally:
        await rest.aclose()


async def parsed(events: AsyncIterator[tuple[int, str]]) -> AsyncIterator[dict[str, Any]]:
    """Recorded events (sequence number, JSON) as event objects."""
    async for _seq, text in events:
        yield json.loads(text)


def _recorded_frame(text: str) -> bytes:
    kind = json.loads(text)["type"]
    return f"event: {kind}\ndata: {text}\n\n".encode()


async def recorded_frames(events: AsyncIterator[tuple[int, str]], keepalive_seconds: float) -> AsyncIterator[bytes]:
    """A replayed and followed recorded response as SSE frames, keepalives included."""
    ticks = cast(AsyncGenerator[tuple[int, str] | None, None], with_keepalive(events, keepalive_seconds))
    try:
        async for item in ticks:
            yield KEEPALIVE if item is None else _recorded_frame(item[1])
    except Exception:
        logger.exception("replaying a response stream failed")
    finally:
        await ticks.aclose()
