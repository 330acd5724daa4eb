"""How a route sends a model's answer: once, buffered (with `Idempotency-Key` honoured),
or as a stream that is opened only if the client is still there.

Shared by the chat completions and Responses routes so that both behave alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from core.errors import ApiError
from core.idempotency import HEADER as IDEMPOTENCY_HEADER
from core.idempotency import validate_key
from core.sessions import SESSION_HEADER
from handler.deps import idempotency_guard
from handler.disconnect import unless_client_leaves

Answer = tuple[str | None, dict[str, Any]]
"""The session the answer belongs to (None when nothing is kept) and its JSON body."""


def _session_headers(session_id: str | None) -> dict[str, str]:
    return {SESSION_HEADER: session_id} if session_id else {}


async def buffered(
    request: Request,
    *,
    owner: str,
    body: dict[str, Any],
    answer: Callable[[], Awaitable[Answer]],
    stored_with_session: bool = True,
) -> Response:
    """Run `answer()` and send its body; with an `Idempotency-Key`, run it once per key
    and send every retry the same bytes. `stored_with_session` False: the session the
    answer names does not hold it yet (a queued background response), so its record is
    not linked from that session (whose head may not exist yet) and only names it."""

    async def record() -> dict[str, Any]:
        session_id, payload = await answer()
        # Kept as text so that a replayed answer is the same bytes as the first.
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        if not stored_with_session:
            return {"session_id": None, "session_header": session_id, "body": text}
        return {"session_id": session_id, "body": text}

    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        result = await record()
    else:
        result = await idempotency_guard(request).run(
            principal=owner,
            route=request.url.path,
            key=validate_key(key),
            request={"body": body, "session": request.headers.get(SESSION_HEADER)},
            produce=record,
        )
    session = result.get("session_header") or result["session_id"]
    return Response(result["body"], media_type="application/json", headers=_session_headers(session))


async def streamed(request: Request, *, session_id: str | None, opening: Awaitable[AsyncIterator[bytes]]) -> Response:
    """An event stream, once the model's first event is in (a failure before it is a
    plain HTTP error carrying the session header); nothing if the client left first."""
    headers = _session_headers(session_id)
    try:
        frames = await unless_client_leaves(request, opening)
    except ApiError as error:
        error.headers = headers  # type: ignore[attr-defined]
        raise
    if isinstance(frames, Response):
        return frames  # the client left before the model's first event
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def with_session_header(error: ApiError, session_id: str | None) -> ApiError:
    error.headers = _session_headers(session_id)  # type: ignore[attr-defined]
    return error
