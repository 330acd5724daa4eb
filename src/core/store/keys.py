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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LogKey:
    """Where a recorded answer lives (`core.store.events`)."""

    pk: str
    state_sk: str
    """The run's state item; sorts after every batch of the log."""
    event_prefix: str

    def batch_sk(self, last_seq: int) -> str:
        return f"{self.event_prefix}{last_seq:010d}"

    @property
    def name(self) -> str:
        return f"{self.pk}\0{self.state_sk}"


RESPONSE_PREFIX = "RESPONSE#"
EVENT_PREFIX = "EVENT#"
"""A stored response's recorded events, by the last sequence number of each batch:
they sort before its `RESPONSE` item, which holds the run's state."""
STREAM_POINTER_SK = "STREAM"
"""In a session partition: the id of the session's latest resumable chat answer. It
and the answers' items (`STREAM#<id>#E<seq>`, `STREAM#<id>#S`) sort after the head,
outside the turn's Query."""


def response_pk(owner: str, response_id: str) -> str:
    return f"{RESPONSE_PREFIX}{owner}#{response_id}"


def response_log(pk: str) -> LogKey:
    """The recorded events of the response whose partition is `pk`."""
    return LogKey(pk=pk, state_sk=RESPONSE_SK, event_prefix=EVENT_PREFIX)


def chat_stream_log(session: str, stream_id: str) -> LogKey:
    """The recorded chunks of one resumable chat answer in the session partition `session`."""
    return LogKey(pk=session, state_sk=f"STREAM#{stream_id}#S", event_prefix=f"STREAM#{stream_id}#E")


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
