"""Items: a stored message as the OpenAI Responses/Conversations faces show it, with ids
that stay the same whichever face reads them.

A session stores OpenAI chat messages. The item faces (conversation items, a response's
input items, `item_reference`) show each message as one or more items:

- a user, system or developer message: a `message` item with `input_text` parts;
- an assistant message: a `message` item with `output_text` (if it has content), then a
  `function_call` item per tool call, in order;
- a tool message: a `function_call_output` item.

Every stored message keeps the ids of its items (`ids`, in that order), so each item
has one id on every face. An id resolves with one read and no index, because it says
where its item is (docs/storage.md, "Item ids"):

- **response ids**, `msg_` / `fc_` + the 48 hex digits of the response's id + 2 hex
  digits of the output index: the output items of a Responses turn, which a stream
  shows before the turn is stored. Resolved through the stored response.
- **stored ids**, `msg_` / `fc_` / `fco_` + 12 hex digits of the message's sequence
  number + 16 random hex digits: everything else, given when the message is stored.
  Resolved in its session (the random part must match, so an id of an earlier life of
  the session never names a message of a new one).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

_RESPONSE_FORM = re.compile(r"(msg|fc)_([0-9a-f]{48})([0-9a-f]{2})")
_STORED_FORM = re.compile(r"(msg|fc|fco)_([0-9a-f]{12})([0-9a-f]{16})")


@dataclass(frozen=True)
class ResponseItemId:
    response_id: str
    output_index: int


@dataclass(frozen=True)
class StoredItemId:
    seq: int


def response_item_id(prefix: str, response_id: str, output_index: int) -> str:
    """The id of a response's output item (`prefix` is msg or fc)."""
    return f"{prefix}_{response_id.removeprefix('resp_')}{output_index:02x}"


def stored_item_id(prefix: str, seq: int) -> str:
    return f"{prefix}_{seq:012x}{secrets.token_hex(8)}"


def parse_item_id(item_id: str) -> ResponseItemId | StoredItemId | None:
    """Where an item id says its item is; None for an id this server never gives."""
    match = _RESPONSE_FORM.fullmatch(item_id)
    if match is not None:
        return ResponseItemId(response_id="resp_" + match.group(2), output_index=int(match.group(3), 16))
    match = _STORED_FORM.fullmatch(item_id)
    if match is not None:
        return StoredItemId(seq=int(match.group(2), 16))
    return None


def item_prefixes(message: dict[str, Any]) -> list[str]:
    """The id prefix of each item a stored message shows as, in order."""
    role = message.get("role")
    if role == "tool":
        return ["fco"]
    if role == "assistant":
        prefixes = ["msg"] if _has_content(message) or not message.get("tool_calls") else []
        return prefixes + ["fc"] * len(message.get("tool_calls") or [])
    return ["msg"]


def mint_ids(message: dict[str, Any], seq: int) -> list[str]:
    return [stored_item_id(prefix, seq) for prefix in item_prefixes(message)]


def _has_content(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return bool(content) if isinstance(content, (str, list)) else False


def _parts(content: Any, kind: str) -> list[dict[str, Any]]:
    """Chat content as item content parts of `kind` (input_text or output_text)."""
    pieces = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
    parts: list[dict[str, Any]] = []
    for piece in pieces:
        if not isinstance(piece, dict):
            continue
        if piece.get("type") == "text":
            part: dict[str, Any] = {"type": kind, "text": str(piece.get("text", ""))}
            if kind == "output_text":
                part |= {"annotations": [], "logprobs": []}
            parts.append(part)
        elif piece.get("type") == "refusal":
            parts.append({"type": "refusal", "refusal": str(piece.get("refusal", ""))})
        elif piece.get("type") == "image_url":
            image = piece.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")})
    return parts


def render(message: dict[str, Any], ids: list[str]) -> list[dict[str, Any]]:
    """The items a stored message shows as, with their ids."""
    role = message.get("role")
    if role == "tool":
        return [
            {
                "type": "function_call_output",
                "id": ids[0],
                "call_id": str(message.get("tool_call_id", "")),
                "output": message.get("content") if isinstance(message.get("content"), str) else "",
                "status": "completed",
            }
        ]
    if role == "assistant":
        items: list[dict[str, Any]] = []
        index = 0
        if _has_content(message) or not message.get("tool_calls"):
            items.append(
                {
                    "type": "message",
                    "id": ids[index],
                    "status": "completed",
                    "role": "assistant",
                    "content": _parts(message.get("content"), "output_text"),
                }
            )
            index += 1
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "id": ids[index],
                    "call_id": str(call.get("id", "")),
                    "name": str(function.get("name", "")),
                    "arguments": str(function.get("arguments", "")),
                    "status": "completed",
                }
            )
            index += 1
        return items
    return [
        {
            "type": "message",
            "id": ids[0],
            "status": "completed",
            "role": role if role in ("user", "system", "developer") else "user",
            "content": _parts(message.get("content"), "input_text"),
        }
    ]


def item_list(items: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    """The list object of the item routes: the spec requires `first_id` and `last_id` as
    strings, so an empty page has empty ones."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": has_more,
    }
