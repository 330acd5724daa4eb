"""The contract's session rules, on their own: ids, new input, titles, the window."""

from __future__ import annotations

import pytest

from core.errors import ApiError
from core.sessions import (
    new_session_id,
    split_continuation,
    split_stateless,
    title_of,
    trim_window,
    validate_session_id,
)
from core.wire import ChatMessage


def messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=content) for role, content in pairs]  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "A-z_0.9:x", "x" * 128, "550e8400-e29b-41d4-a716-446655440000"])
def test_valid_ids_pass(good: str) -> None:
    assert validate_session_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "slash/", "hash#", "ünïcode", "semi;", "new\nline"])
def test_invalid_ids_are_a_400_naming_the_header(bad: str) -> None:
    with pytest.raises(ApiError) as caught:
        validate_session_id(bad)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_session_id"
    assert caught.value.param == "X-Hermes-Session-Id"


def test_new_ids_are_valid_and_unguessable() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for session_id in ids:
        assert validate_session_id(session_id) == session_id
        assert session_id[14] == "4"  # a version-4 UUID: 122 random bits


def test_continuation_takes_trailing_messages_after_the_last_assistant() -> None:
    split = split_continuation(
        messages(("system", "be brief"), ("user", "old"), ("assistant", "old answer"), ("user", "new one"))
    )
    assert split.new_input == [{"role": "user", "content": "new one"}]
    assert split.system == [{"role": "system", "content": "be brief"}]


def test_continuation_keeps_tool_results_after_a_tool_call() -> None:
    body = [
        ChatMessage(role="user", content="weather?"),
        ChatMessage(
            role="assistant",
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        ),
        ChatMessage(role="tool", tool_call_id="c1", content="sunny"),
    ]
    split = split_continuation(body)
    assert split.new_input == [{"role": "tool", "tool_call_id": "c1", "content": "sunny"}]


def test_continuation_without_new_input_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        split_continuation(messages(("user", "q"), ("assistant", "a")))
    assert caught.value.status == 400
    with pytest.raises(ApiError):
        split_continuation(messages(("system", "only a system prompt")))


def test_stateless_keeps_the_whole_conversation_and_sets_system_aside() -> None:
    split = split_stateless(messages(("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c")))
    assert [m["content"] for m in split.new_input] == ["a", "b", "c"]
    assert split.system == [{"role": "system", "content": "s"}]


def test_title_is_the_first_user_message_on_one_line_and_short() -> None:
    long_text = "word " * 50
    assert title_of([{"role": "user", "content": "  Hello\n  there "}]) == "Hello there"
    title = title_of([{"role": "user", "content": long_text}])
    assert len(title) == 80 and title.endswith("…")
    assert title_of([{"role": "user", "content": [{"type": "text", "text": "parts"}]}]) == "parts"


def test_a_cut_window_starts_at_a_user_message() -> None:
    recent = [
        {"role": "tool", "tool_call_id": "c", "content": "x"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "b"},
    ]
    assert trim_window(recent, cut=True) == recent[2:]
    assert trim_window(recent, cut=False) == recent
    only_tools = [{"role": "tool", "tool_call_id": "c", "content": "x"}, {"role": "assistant", "content": "a"}]
    assert trim_window(only_tools, cut=True) == only_tools[1:]
