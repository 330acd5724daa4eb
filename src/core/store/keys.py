"""The table's keys, in one place (docs/storage.md is the design they implement).

Every `pk` starts with the item's kind and contains its owner, so another principal's
id is simply not there. Sort keys inside a session partition sort as

    COMPACTION#<seq>  <  LINK#...  <  LISTING  <  MSG#<seq>  <  MSG#SUMMARY  <  SESSION

so the turn's one descending Query (`sk BETWEEN MSG# AND SESSION`) reads the head, the
latest summary, then the newest messages, and never spends its Limit on link items or
on the earlier summaries kept for listing.
"""

from __future__ import annotations

import hashlib
from typing import Any

HEAD_SK = "SESSION"
MESSAGE_PREFIX = "MSG#"
LINK_PREFIX = "LINK#"
"""A link names an item outside the session partition that holds the session's content
(a stored response, an idempotency record, a conversation pointer): deleting the
session follows it first."""
LISTING_SK = "LISTING"
"""The session's entry in the owner index (see `core.store.listing`)."""
RESPONSE_SK = "RESPONSE"
CONVERSATION_SK = "CONVERSATION"
OWNER_INDEX = "gsi1"
FIRST_MESSAGE_SK = f"{MESSAGE_PREFIX}{0:012d}"
SUMMARY_SK = f"{MESSAGE_PREFIX}SUMMARY"
"""The session's latest summary: after every message key ("S" sorts after the digits),
before the head, so the turn's Query reads it second, with no extra request."""
COMPACTION_PREFIX = "COMPACTION#"
"""Every summary written, by the last sequence number it covers: listed with the
messages, never read by a turn (it sorts before `MSG#`)."""


def compaction_sk(last_seq: int) -> str:
    return f"{COMPACTION_PREFIX}{last_seq:012d}"


def session_pk(owner: str, session_id: str) -> str:
    return f"SESSION#{owner}#{session_id}"


def message_sk(seq: int) -> str:
    return f"{MESSAGE_PREFIX}{seq:012d}"


def response_pk(owner: str, response_id: str) -> str:
    return f"RESPONSE#{owner}#{response_id}"


def conversation_pk(owner: str, name: str) -> str:
    return f"CONVERSATION#{owner}#{name}"


def link_sk(target_pk: str) -> str:
    return f"{LINK_PREFIX}{target_pk}"


def string_attr(value: str) -> dict[str, str]:
    return {"S": value}


def number_attr(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def link_item(session: str, target_pk: str, target_sk: str, expires_at: int | None) -> dict[str, Any]:
    """The link item, in the session partition `session`, naming `target_pk`/`target_sk`."""
    item: dict[str, Any] = {
        "pk": string_attr(session),
        "sk": string_attr(link_sk(target_pk)),
        "ref_pk": string_attr(target_pk),
        "ref_sk": string_attr(target_sk),
    }
    if expires_at is not None:
        item["expires_at"] = number_attr(expires_at)
    return item


IDEMPOTENCY_PREFIX = "IDEMPOTENCY#"


def idempotency_pk(owner: str, route: str, key: str) -> str:
    """A partition per idempotency record, so that no key is shared by every request of
    a principal; the route and the key are hashed (a key may hold any printable text)."""
    digest = hashlib.sha256(f"{route}\0{key}".encode()).hexdigest()[:32]
    return f"{IDEMPOTENCY_PREFIX}{owner}#{digest}"
