"""The summary prompt (compaction, issue 12) and the input it is given.

Kept in one small module because two parties read it: `core.compaction`, which asks
the configured model for a summary, and the offline `echo` model, which recognises the
prompt and answers with a deterministic summary (so tests can check what reached a
later turn). The README quotes the prompt.
"""

from __future__ import annotations

import re
from typing import Any

SUMMARY_PROMPT = (
    "You maintain the running summary of a long conversation between a user and an assistant. "
    "You are given the previous summary (if any) and the messages that came after it. "
    "Write the new summary: keep every fact, name, number, decision, preference and open "
    "question that a later turn could need, from the previous summary and from the new "
    "messages; drop greetings and repetition. Write plain prose in the conversation's "
    "language, at most {max_words} words. Answer with the summary only."
)
"""The system message of a summary request (`{max_words}`: `MAX_SUMMARY_WORDS`)."""

MAX_SUMMARY_WORDS = 600
MAX_SUMMARY_CHARS = 6000
"""A summary is cut to this many characters (its beginning is kept), whatever the model
wrote: the model's input stays bounded however long the session grows."""
LINE_CHARS = 2000
"""Each message is quoted up to this many characters in a summary request."""

_HEADER = re.compile(r"<messages first=\"(\d+)\" last=\"(\d+)\" from=\"(\d+)\">")


def system_prompt() -> str:
    return SUMMARY_PROMPT.format(max_words=MAX_SUMMARY_WORDS)


def summary_input(previous: str | None, first: int, last: int, covered_from: int, lines: list[str]) -> str:
    """The user message of a summary request: the previous summary, then the messages
    `first`..`last` (the new summary covers `covered_from`..`last`)."""
    return (
        f"<previous_summary>\n{previous or '(none)'}\n</previous_summary>\n"
        f'<messages first="{first}" last="{last}" from="{covered_from}">\n' + "\n".join(lines) + "\n</messages>"
    )


def transcript_line(seq: int, message: dict[str, Any], text: str) -> str:
    role = str(message.get("role", "user"))
    if message.get("tool_calls"):
        calls = ", ".join(str((call.get("function") or {}).get("name", "")) for call in message["tool_calls"])
        text = f"{text} [called: {calls}]".strip()
    return f"[{seq}] {role}: {' '.join(text.split())[:LINE_CHARS]}"


def is_summary_request(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system" and messages[0].get("content") == system_prompt()


def echo_summary(user_text: str) -> str:
    """The echo model's summary: "Summary of messages <from>-<last>: " then the previous
    summary's body and the first words of each new message, cut to the bound."""
    match = _HEADER.search(user_text)
    if match is None:
        return "Summary of messages: (nothing)"
    last, covered_from = match.group(2), match.group(3)
    previous = user_text.split("<previous_summary>\n", 1)[1].split("\n</previous_summary>", 1)[0]
    body = previous.split(": ", 1)[1] if previous.startswith("Summary of messages") and ": " in previous else ""
    lines = user_text[match.end() :].split("\n</messages>", 1)[0].strip().splitlines()
    firsts = [" ".join(line.split(": ", 1)[-1].split()[:6]) for line in lines]
    parts = [part for part in [body, " / ".join(firsts)] if part]
    return bound(f"Summary of messages {covered_from}-{last}: " + " / ".join(parts))


def bound(text: str) -> str:
    """A summary within `MAX_SUMMARY_CHARS`, its beginning kept (cut at a word)."""
    text = text.strip()
    if len(text) <= MAX_SUMMARY_CHARS:
        return text
    return text[: MAX_SUMMARY_CHARS - 1].rsplit(" ", 1)[0] + "…"
