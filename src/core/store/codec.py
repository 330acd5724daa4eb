"""Items as DynamoDB stores them, and back: the head and the message items of a session.

Kept apart from the access patterns (`dynamodb`, `reads`, `deletion`, `listing`) so that
each of them reads an item one way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.items import item_prefixes
from core.store.base import Head, SessionKey, StoredMessage, TurnUsage, UsageTotals
from core.store.keys import HEAD_SK, message_sk, number_attr, string_attr


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_head(item: dict[str, Any]) -> Head:
    return Head(
        next_seq=int(item["next_seq"]["N"]),
        base_seq=int(item.get("base_seq", {"N": "0"})["N"]),
        created_at=float(item["created_at"]["N"]),
        expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
        system=json.loads(item["system"]["S"]) if "system" in item else [],
        title=item.get("title", {"S": ""})["S"],
        listed_at=float(item["listed_at"]["N"]) if "listed_at" in item else None,
        metadata=json.loads(item["metadata"]["S"]) if "metadata" in item else {},
        meta_rev=int(item["meta_rev"]["N"]) if "meta_rev" in item else 0,
        usage=parse_totals(item),
    )


# Usage attributes: short names, since a message item's overhead is bounded
# (MESSAGE_OVERHEAD_BYTES). On a head: the session's totals; on a turn's last message:
# that turn's usage. Items written before usage was kept have none: zero.
TOKENS_IN = "tokens_in"
TOKENS_OUT = "tokens_out"
TURNS = "turns"


def _number(item: dict[str, Any], name: str) -> int:
    return int(item[name]["N"]) if name in item else 0


def parse_totals(head: dict[str, Any]) -> UsageTotals:
    return UsageTotals(_number(head, TOKENS_IN), _number(head, TOKENS_OUT), _number(head, TURNS))


def totals_attrs(totals: UsageTotals) -> dict[str, Any]:
    return {
        TOKENS_IN: number_attr(totals.input_tokens),
        TOKENS_OUT: number_attr(totals.output_tokens),
        TURNS: number_attr(totals.turns),
    }


def parse_turn_usage(message: dict[str, Any]) -> TurnUsage | None:
    if TOKENS_IN not in message and TOKENS_OUT not in message:
        return None
    return TurnUsage(_number(message, TOKENS_IN), _number(message, TOKENS_OUT))


def is_expired(item: dict[str, Any], now: float) -> bool:
    return "expires_at" in item and int(item["expires_at"]["N"]) <= now


def stored_message(item: dict[str, Any], pk: str) -> StoredMessage:
    """A message item as read. Messages stored before items had ids get ids derived from
    their partition and sequence number: the same on every read, and never written."""
    seq = int(item["seq"]["N"])
    message = json.loads(item["msg"]["S"])
    ids = item["ids"]["S"].split(",") if item.get("ids", {}).get("S") else []
    if len(ids) != len(item_prefixes(message)):
        tag = hashlib.sha256(f"{pk}#{seq}".encode()).hexdigest()[:16]
        ids = [f"{prefix}_{seq:012x}{tag}" for prefix in item_prefixes(message)]
    return StoredMessage(
        seq=seq,
        message=message,
        created_at=float(item.get("created_at", {"N": "0"})["N"]),
        item_ids=ids,
        usage=parse_turn_usage(item),
    )


def head_item(
    key: SessionKey,
    pk: str,
    *,
    next_seq: int,
    base_seq: int,
    created_at: float,
    updated_at: float,
    expires_at: int | None,
    system: list[dict[str, Any]],
    title: str,
    listed_at: float | None,
    metadata: dict[str, str] | None = None,
    meta_rev: int = 0,
    usage: UsageTotals | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": string_attr(pk),
        "sk": string_attr(HEAD_SK),
        "owner": string_attr(key.owner),
        "session_id": string_attr(key.session_id),
        "next_seq": number_attr(next_seq),
        "base_seq": number_attr(base_seq),
        "created_at": number_attr(round(created_at, 3)),
        "updated_at": number_attr(round(updated_at, 3)),
        "title": string_attr(title),
    }
    if usage is not None:
        item.update(totals_attrs(usage))
    if listed_at is not None:
        item["listed_at"] = number_attr(round(listed_at, 3))
    if metadata:
        item["metadata"] = string_attr(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")))
    if meta_rev:
        item["meta_rev"] = number_attr(meta_rev)
    if system:
        item["system"] = string_attr(json.dumps(system, ensure_ascii=False, separators=(",", ":")))
    if expires_at is not None:
        item["expires_at"] = number_attr(expires_at)
    return item


def message_item(
    pk: str,
    seq: int,
    message: dict[str, Any],
    now: float,
    expires_at: int | None,
    commit: str,
    ids: list[str],
    usage: TurnUsage | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": string_attr(pk),
        "sk": string_attr(message_sk(seq)),
        "seq": number_attr(seq),
        "msg": string_attr(json.dumps(message, ensure_ascii=False, separators=(",", ":"))),
        "ids": string_attr(",".join(ids)),
        "created_at": number_attr(round(now, 3)),
        "commit": string_attr(commit),
    }
    if usage is not None:
        item[TOKENS_IN] = number_attr(usage.input_tokens)
        item[TOKENS_OUT] = number_attr(usage.output_tokens)
    if expires_at is not None:
        item["expires_at"] = number_attr(expires_at)
    return item
