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
from core.sse import KEEPALIVE, KEEPALIVE_SECONDS, Recorded, recorded_frames, ticking, with_keepalive

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


_TYPE_PREFIX = '{"type":"'


def event_type(text: str) -> str:
    """A recorded event's type, read from its JSON's first key without parsing it all
    (events are written with `type` first); parsed when it is not there."""
    if text.startswith(_TYPE_PREFIX):
        end = text.find('"', len(_TYPE_PREFIX))
        if end > 0:
            return text[len(_TYPE_PREFIX) : end]
    return str(json.loads(text)["type"])


def _recorded_frame(text: str) -> bytes:
    return f"event: {event_type(text)}\ndata: {text}\n\n".encode()


async def open_recorded_stream(
    events: AsyncIterator[Recorded], prepared: PreparedResponse, keepalive_seconds: float
) -> AsyncIterator[bytes]:
    """`open_response_stream` for the client of a recorded run in its own process: the
    same wait for the first event past the opening ones (a failure before it is that
    HTTP status), then the recorded JSON framed as it is, never parsed again."""
    ticks = ticking(events, keepalive_seconds)
    head: list[Recorded | None] = []
    async for item in ticks:
        head.append(item)
        if item is None or event_type(item[1]) not in _OPENING:
            break
    last = head[-1] if head else None
    if last is not None and event_type(last[1]) == "response.failed" and prepared.failure is not None:
        await ticks.aclose()
        raise prepared.failure
    return recorded_frames(head, ticks, _recorded_frame)


async def replay_frames(events: AsyncIterator[Recorded], keepalive_seconds: float) -> AsyncIterator[bytes]:
    """A replayed and followed recorded response as SSE frames, keepalives included."""
    async for frame in recorded_frames([], ticking(events, keepalive_seconds), _recorded_frame):
        yield frame
