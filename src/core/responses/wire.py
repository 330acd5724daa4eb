"""OpenAI Responses wire format: the request we accept and the bodies we send.

Requests are parsed leniently, as the official API does for its clients (unknown
fields ignored, `null` means "not given"); validation problems are 400s naming the
parameter. Bodies are plain dicts built here, checked against the official OpenAPI
schemas (`Response`, the `ResponseStreamEvent` family) in the tests.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import bad_request, validation_error

_RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_CONVERSATION_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(24)


def new_function_call_id() -> str:
    return "fc_" + secrets.token_hex(24)


def new_call_id() -> str:
    """A call id for a tool call whose provider gave none."""
    return "call_" + secrets.token_hex(12)


def is_response_id(value: str) -> bool:
    """Whether `value` could name a stored response; anything else is simply not found
    (and never reaches a key, where a `#` could blur the owner's part)."""
    return bool(_RESPONSE_ID.fullmatch(value))


def validate_conversation_name(name: str) -> str:
    if not _CONVERSATION_NAME.fullmatch(name):
        raise bad_request(
            "Invalid 'conversation': use 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'.",
            param="conversation",
            code="invalid_value",
        )
    return name


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ConversationRef(_Lenient):
    id: str


class CreateResponseRequest(_Lenient):
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    @property
    def conversation_name(self) -> str | None:
        if self.conversation is None:
            return None
        return self.conversation if isinstance(self.conversation, str) else self.conversation.id

    @property
    def stores(self) -> bool:
        """`store` defaults to true."""
        return self.store is not False


def parse_create_request(data: dict[str, Any]) -> CreateResponseRequest:
    try:
        return CreateResponseRequest.model_validate(data)
    except ValidationError as error:
        raise validation_error(error.errors()) from None


# -- bodies ---------------------------------------------------------------------------


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, *, status: str, text: str | None) -> dict[str, Any]:
    """An assistant output message; `text=None` is the empty shell sent when it opens."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [output_text_part(text)],
    }


def function_call_item(item_id: str, *, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_body(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    echo: dict[str, Any],
    previous_response_id: str | None,
    conversation: str | None,
    store: bool,
    background: bool = False,
    usage: dict[str, Any] | None = None,
    completed_at: int | None = None,
    error: dict[str, str] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    """The Response object. `echo` holds the request parameters it repeats (see
    `core.responses.items.echoed_parameters`)."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": background,
        "completed_at": completed_at,
        "conversation": {"id": conversation} if conversation is not None else None,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": output,
        "previous_response_id": previous_response_id,
        "store": store,
        **echo,
    }
    if usage is not None:
        body["usage"] = usage
    return body
