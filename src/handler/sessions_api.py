"""Session management: list the caller's sessions, read one, compact one, delete one.

Every lookup is keyed by the caller's principal, so another principal's session id
gets the same 404 as an id that never existed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from core.compaction import CompactionFailed
from core.errors import ApiError, bad_request, not_found, unavailable
from core.sessions import SESSION_HEADER, STREAM_ID_HEADER, validate_session_id
from core.sse import KEEPALIVE_SECONDS
from core.store.base import InvalidCursor, SessionKey, StoredMessage, Summary
from handler.deps import chat_service, principal_of, resumable_chat
from handler.parsing import page_parameters, path_param, path_parameters, small_int

router = APIRouter()

DEFAULT_SESSIONS_PAGE = 20
DEFAULT_MESSAGES_PAGE = 100
MAX_PAGE = 100


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    limit = small_int(raw)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"limit must be an integer from 1 to {MAX_PAGE}.", param="limit", code="invalid_value")
    return limit


def _session_key(request: Request, session_id: str) -> SessionKey:
    try:
        validate_session_id(session_id)
    except Exception:
        raise _missing(session_id) from None
    return SessionKey(owner=principal_of(request), session_id=session_id)


def _missing(session_id: str) -> Exception:
    return not_found(f"No session found with id '{session_id[:128]}'.", param="session_id")


def _bad_cursor() -> Exception:
    return bad_request("The 'after' cursor is not one this API returned.", param="after", code="invalid_value")


@router.get("/v1/sessions", response_model=None, openapi_extra=page_parameters(DEFAULT_SESSIONS_PAGE))
async def list_sessions(request: Request) -> dict[str, Any]:
    store = chat_service(request).store
    try:
        page = await store.list_sessions(
            principal_of(request), limit=_limit(request, DEFAULT_SESSIONS_PAGE), after=request.query_params.get("after")
        )
    except InvalidCursor:
        raise _bad_cursor() from None
    return {
        "object": "list",
        "data": [
            {
                "id": summary.session_id,
                "object": "session",
                "title": summary.title,
                "message_count": summary.message_count,
                "created_at": int(summary.created_at),
                "updated_at": int(summary.updated_at),
                "usage": {
                    "input_tokens": summary.usage.input_tokens,
                    "output_tokens": summary.usage.output_tokens,
                    "turns": summary.usage.turns,
                },
            }
            for summary in page.items
        ],
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/v1/sessions/{session_id}/messages",
    response_model=None,
    openapi_extra=path_parameters("session_id", page=DEFAULT_MESSAGES_PAGE),
)
async def list_messages(request: Request) -> dict[str, Any]:
    session_id = path_param(request, "session_id")
    store = chat_service(request).store
    try:
        page = await store.list_messages(
            _session_key(request, session_id),
            limit=_limit(request, DEFAULT_MESSAGES_PAGE),
            after=request.query_params.get("after"),
        )
    except InvalidCursor:
        raise _bad_cursor() from None
    if page is None:
        raise _missing(session_id)
    found = (
        await store.list_summaries(_session_key(request, session_id), page.items[0].seq, page.items[-1].seq)
        if page.items
        else []
    )
    return {
        "object": "list",
        "data": _with_summaries(page.items, found),
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }


def _message(stored: StoredMessage) -> dict[str, Any]:
    """A stored message as listed; a model turn's reply carries that turn's usage."""
    body: dict[str, Any] = {
        "object": "session.message",
        "seq": stored.seq,
        "created_at": int(stored.created_at),
        **stored.message,
    }
    if stored.usage is not None:
        body["usage"] = {"input_tokens": stored.usage.input_tokens, "output_tokens": stored.usage.output_tokens}
    return body


def summary_body(summary: Summary) -> dict[str, Any]:
    """A summary as the session API shows it: its own object type, the messages it covers."""
    return {
        "object": "session.summary",
        "covers": {"first_seq": summary.first_seq, "last_seq": summary.last_seq},
        "created_at": int(summary.created_at),
        "model": summary.model,
        "content": summary.text,
    }


def _with_summaries(messages: list[StoredMessage], summaries: list[Summary]) -> list[dict[str, Any]]:
    """The page's messages in order, each summary right after the last message it covers."""
    shown: list[dict[str, Any]] = []
    pending = list(summaries)
    for index, stored in enumerate(messages):
        shown.append(_message(stored))
        following = messages[index + 1].seq if index + 1 < len(messages) else None
        while pending and (following is None or pending[0].last_seq < following):
            shown.append(summary_body(pending.pop(0)))
    return shown


@router.post("/v1/sessions/{session_id}/compact", response_model=None, openapi_extra=path_parameters("session_id"))
async def compact_session(request: Request) -> dict[str, Any]:
    """Summarise now what lies outside the window and no summary covers yet, whatever
    the threshold; with COMPACTION=off, a 400 that says so."""
    session_id = path_param(request, "session_id")
    chat = chat_service(request)
    key = _session_key(request, session_id)
    state = await chat.store.load(key, chat.settings.history_window)
    if not state.exists:
        raise _missing(session_id)
    if not chat.settings.compaction:
        raise bad_request(
            "Compaction is turned off on this server (COMPACTION=off).", param=None, code="compaction_disabled"
        )
    try:
        result = await chat.compactor.compact(key, state, model=chat.settings.default_model, force=True)
    except CompactionFailed:
        raise unavailable("The summary could not be made right now; nothing was changed. Retry the request.") from None
    if result.outcome == "busy":
        raise ApiError(
            409, "Another compaction of this session is running; retry in a moment.", code="compaction_in_progress"
        )
    return {
        "id": session_id,
        "object": "session.compaction",
        "compacted": result.outcome == "compacted",
        "summarised_messages": result.summarised,
        "summary": summary_body(result.summary) if result.summary is not None else None,
    }


@router.delete("/v1/sessions/{session_id}", response_model=None, openapi_extra=path_parameters("session_id"))
async def delete_session(request: Request) -> dict[str, Any]:
    session_id = path_param(request, "session_id")
    if not await chat_service(request).store.delete_session(_session_key(request, session_id)):
        raise _missing(session_id)
    return {"id": session_id, "object": "session.deleted", "deleted": True}


@router.get(
    "/v1/sessions/{session_id}/stream",
    response_model=None,
    openapi_extra={
        "parameters": [
            *path_parameters("session_id")["parameters"],
            {
                "name": "after",
                "in": "query",
                "required": False,
                "description": "How many chunks of the answer the client already has.",
                "schema": {"type": "integer", "minimum": 0, "default": 0},
            },
        ]
    },
)
async def resume_stream(request: Request) -> Response:
    """The session's latest resumable answer (started with `X-Threadline-Resumable: true`)
    from chunk number `after` on, then live until it ends, as the same SSE frames."""
    key = _session_key(request, path_param(request, "session_id"))
    raw_after = request.query_params.get("after")
    after = 0 if raw_after is None else small_int(raw_after)
    if after is None:
        raise bad_request(
            "Invalid value for 'after': expected how many chunks you already have (a non-negative integer).",
            param="after",
            code="invalid_value",
        )
    stream_id, events = await resumable_chat(request).resume(key, after)
    keepalive = float(getattr(request.app.state, "keepalive_seconds", KEEPALIVE_SECONDS))
    from core.chat_streams import open_frames

    frames = await open_frames(events, None, keepalive)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={
            SESSION_HEADER: key.session_id,
            STREAM_ID_HEADER: stream_id,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )


@router.post(
    "/v1/sessions/{session_id}/stream/cancel", response_model=None, openapi_extra=path_parameters("session_id")
)
async def cancel_stream(request: Request) -> dict[str, Any]:
    """Stop the session's latest resumable answer: the model call ends, the turn is not
    stored, and its followers get what was sent so far, then `[DONE]`."""
    key = _session_key(request, path_param(request, "session_id"))
    return await resumable_chat(request).cancel(key)
