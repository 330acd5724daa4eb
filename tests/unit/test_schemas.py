"""The schema checks themselves: they catch a wrong body, and say when the spec is absent."""

from __future__ import annotations

import pytest

from tests.schemas import SPEC_MISSING, SPEC_PATH, validate


@pytest.fixture(autouse=True)
def needs_spec() -> None:
    if not SPEC_PATH.exists():
        pytest.skip(SPEC_MISSING)


def test_a_valid_error_body_passes() -> None:
    validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}, "ErrorResponse")


def test_a_completion_without_refusal_fails() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "echo",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "logprobs": None, "finish_reason": "stop"}
        ],
    }
    with pytest.raises(AssertionError, match="refusal"):
        validate(body, "CreateChatCompletionResponse")


def test_nullable_fields_accept_null() -> None:
    validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": None},
        "CreateChatCompletionStreamResponse",
    )
