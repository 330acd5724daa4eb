"""Session management: list the caller's sessions, read one, delete one.

Every lookup is keyed by the caller's principal, so another principal's session id
gets the same 404 as an id that never existed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from core.errors import bad_request, not_found
from core.sessions import validate_session_id
from core.store.base import InvalidCursor, SessionKey, StoredMessage
from handler.deps import chat_service, principal_of
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
    return {
        "object": "list",
        "data": [_message(stored) for stored in page.items],
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


@router.delete("/v1/sessions/{session_id}", response_model=None, openapi_extra=path_parameters("session_id"))
async def delete_session(request: Request) -> dict[str, Any]:
    session_id = path_param(request, "session_id")
    if not await chat_service(request).store.delete_session(_session_key(request, session_id)):
        raise _missing(session_id)
    return {"id": session_id, "object": "session.deleted", "deleted": True}
