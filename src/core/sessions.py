"""The session rules of the contract: ids, which body messages are new, the system prompt.

These are pure functions over wire messages, so the rules can be read (and
tested) without a store, a model or a web framework.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from core.errors import ApiError, bad_request
from core.providers.echo import message_text
from core.wire import SYSTEM_ROLES, ChatMessage

SESSION_HEADER = "X-Hermes-Session-Id"
RESUMABLE_HEADER = "X-Threadline-Resumable"
"""`true` on a streamed chat completion: record it so that it runs on and can be resumed."""
STREAM_ID_HEADER = "X-Threadline-Stream-Id"
"""On a resumed stream: which answer it is (the completion id its chunks carry)."""
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TITLE_LENGTH = 80


def new_session_id() -> str:
    """An unguessable id: a random UUID carries 122 random bits."""
    return str(uuid.uuid4())


def validate_session_id(raw: str) -> str:
    """Rule 6: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, or a 400 before any I/O."""
    if not _VALID_ID.fullmatch(raw):
        raise ApiError(
            400,
            f"Invalid {SESSION_HEADER}: use 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'.",
            code="invalid_session_id",
            param=SESSION_HEADER,
        )
    return raw


@dataclass(frozen=True)
class SplitRequest:
    system: list[dict[str, Any]]
    """The request's own system (and developer) messages; empty when it has none."""
    new_input: list[dict[str, Any]]
    """What this turn appends before the reply."""


def split_continuation(messages: list[ChatMessage]) -> SplitRequest:
    """Rule 2: with a session, the new input is the trailing non-system messages
    after the body's last assistant message; earlier body messages are ignored."""
    system = [m.stored() for m in messages if m.role in SYSTEM_ROLES]
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    new_input = [m.stored() for m in messages[last_assistant + 1 :] if m.role not in SYSTEM_ROLES]
    if not new_input:
        raise bad_request(
            "The request has no new input: with a session, send at least one user or tool message "
            "after the last assistant message.",
            param="messages",
        )
    return SplitRequest(system=system, new_input=new_input)


def split_stateless(messages: list[ChatMessage]) -> SplitRequest:
    """Rule 1: without a session the whole body is the conversation to keep."""
    system = [m.stored() for m in messages if m.role in SYSTEM_ROLES]
    conversation = [m.stored() for m in messages if m.role not in SYSTEM_ROLES]
    if not conversation:
        raise bad_request("The request has no user message.", param="messages")
    return SplitRequest(system=system, new_input=conversation)


def title_of(messages: list[dict[str, Any]]) -> str:
    """A session's title: its first user message, on one line and shortened."""
    text = next((message_text(m) for m in messages if m.get("role") == "user"), "")
    text = " ".join(text.split())
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1].rstrip() + "…"


def trim_window(recent: list[dict[str, Any]], *, cut: bool) -> list[dict[str, Any]]:
    """Where the history window cut the session short, start it at a user message if
    one is in the window, so that no provider sees a tool result without its call."""
    if not cut:
        return list(recent)
    first_user = next((i for i, m in enumerate(recent) if m.get("role") == "user"), None)
    if first_user is not None:
        return recent[first_user:]
    first_non_tool = next((i for i, m in enumerate(recent) if m.get("role") != "tool"), len(recent))
    return recent[first_non_tool:]


def wants_resumable(value: str | None) -> bool:
    """`X-Threadline-Resumable` read: absent or false is a plain stream; anything but a
    boolean is a 400 (never a silent plain stream the client did not ask for)."""
    if value is None:
        return False
    flag = value.strip().lower()
    if flag in ("true", "1", "on", "yes"):
        return True
    if flag in ("false", "0", "off", "no", ""):
        return False
    raise bad_request(f"{RESUMABLE_HEADER} must be true or false.", param=RESUMABLE_HEADER, code="invalid_value")
