"""The offline, deterministic `echo` model.

It answers with the last user text and says how many messages it was given, word
by word, so a person trying the service sees both streaming and session
continuity work without any credentials. Asked for a summary (compaction's prompt,
`core.summary_prompt`), it answers with a deterministic one: the first words of each
message, after the previous summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, Usage
from core.summary_prompt import echo_summary, is_summary_request


def message_text(message: dict[str, Any]) -> str:
    """The plain text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _count_words(messages: list[dict[str, Any]]) -> int:
    return sum(len(message_text(m).split()) for m in messages)


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """The whole reply for these messages (what the stream spells out word by word)."""
    last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    if is_summary_request(messages):
        return echo_summary(last_user)
    count = len(messages)
    noun = "message" if count == 1 else "messages"
    said = last_user.strip() or "(nothing)"
    return f"Echo: {said} (I was given {count} {noun}.)"


class EchoProvider:
    name = "echo"

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        words = echo_reply(request.messages).split(" ")
        for position, word in enumerate(words):
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            yield TextDelta(word if position == 0 else " " + word)
        yield Finish(
            "stop",
            Usage(prompt_tokens=_count_words(request.messages), completion_tokens=len(words)),
        )
