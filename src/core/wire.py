"""OpenAI Chat Completions wire format: the request we accept and the bodies we send.

Requests are parsed leniently, as the official API does for its clients: unknown
fields are ignored and `null` means "not given". Responses are plain dicts built
here, so their shape is visible in one place and checked against the official
OpenAPI schemas in the tests.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
SYSTEM_ROLES: frozenset[str] = frozenset({"system", "developer"})


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Lenient):
    # The per-role rules of `_check_shape`, in the JSON schema too (for /docs and fuzzers).
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"role": {"enum": ["system", "developer", "user", "tool"]}}},
                    "then": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
                },
                {
                    "if": {"properties": {"role": {"const": "tool"}}},
                    "then": {
                        "required": ["tool_call_id"],
                        "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
                    },
                },
            ]
        },
    )

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a message with role 'tool' needs a tool_call_id")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs a non-empty tool_call_id (the call it answers)")
        if self.role in {"user", "system", "developer", "tool"} and self.content is None:
            raise ValueError(f"a message with role '{self.role}' needs content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            # The official API accepts this (a refusal, say); keep it storable as text.
            self.content = ""
        return self

    def stored(self) -> dict[str, Any]:
        """The message as kept in the store and sent to providers: no null fields."""
        return self.model_dump(exclude_none=True)


class StreamOptions(_Lenient):
    include_usage: bool | None = None


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, json_schema_extra={"anyOf": [{"const": 1}, {"type": "null"}]})

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported: a session keeps one reply per turn")
        return value

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def now() -> int:
    return int(time.time())


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, int],
) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": message.get("content"), "refusal": None}
    if message.get("tool_calls"):
        reply["tool_calls"] = message["tool_calls"]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chunk_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk_body(*, completion_id: str, created: int, model: str, usage: dict[str, int]) -> dict[str, Any]:
    """The extra last chunk of `stream_options.include_usage`: `choices` is present and empty."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }


def models_body(model_ids: list[str], owned_by: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": owned_by} for model_id in model_ids
        ],
    }
