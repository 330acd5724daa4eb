"""The schema checks themselves: they catch a wrong body, and fail when the spec is missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import tests.schemas
from tests.schemas import SPEC_PATH, validate

PINNED_SHA256 = "bbfd19abcde0e7412da99378deb2a959ccdd3a812f97c9e35901921e8e973f9a"
"""openai/openai-openapi at f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (tests/openai-openapi/README.md)."""


def test_the_pinned_spec_is_in_the_repository_unchanged() -> None:
    assert SPEC_PATH.is_file(), f"{SPEC_PATH} is missing: every schema check depends on it"
    assert hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest() == PINNED_SHA256
    assert (SPEC_PATH.parent / "LICENSE").read_text().startswith("The MIT License")


def test_a_missing_spec_fails_the_check_instead_of_passing_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tests.schemas, "SPEC_PATH", tmp_path / "openapi.json")
    tests.schemas.spec.cache_clear()
    tests.schemas._registry.cache_clear()
    try:
        with pytest.raises(AssertionError, match="spec is missing"):
            validate({"error": {}}, "ErrorResponse")
    finally:
        tests.schemas.spec.cache_clear()
        tests.schemas._registry.cache_clear()


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
