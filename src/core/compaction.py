"""Compaction (issue 12): a session that outgrows its window gets a running summary,
under the same id, and the model sees system prompt, summary, window, new input.

When a turn leaves more than `COMPACTION_THRESHOLD` messages outside the window that
no summary covers yet, the chat service defers a compaction until after the response
(`core.after_response`): it never delays the turn's first token and never fails the
turn. A compaction

1. claims the session's summary item (`core.store.summaries`): concurrent turns that
   all see the session due compact it once, the others do nothing;
2. reads the messages since the latest summary, up to the window's start (at most
   `MAX_BATCH` of them: a long backlog is caught up over several turns);
3. asks the model for a new summary from the previous one and those messages
   (`core.summary_prompt`), so its cost is bounded by the threshold and the summary's
   bound, never by the session's length;
4. writes it, conditioned on its claim. Raw messages are never changed or removed.

A failure (the model or the store) is logged and counted (telemetry's
`compaction_failures`), the claim is given back, and the next turn tries again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from core import after_response, telemetry
from core.providers.base import ModelProvider, ModelRequest, TextDelta, run_to_end
from core.providers.echo import message_text
from core.settings import Settings
from core.store.base import Head, SessionKey, SessionState, SessionStore, StoredMessage, Summary
from core.summary_prompt import bound, summary_input, system_prompt, transcript_line

logger = logging.getLogger("threadline.compaction")

MAX_BATCH = 200
"""Messages summarised by one compaction at most."""
CLAIM_LEASE_SECONDS = 300.0
"""How long a claim holds if its compaction never finishes (its process died)."""

Outcome = Literal["compacted", "nothing_to_compact", "busy", "failed", "off"]


@dataclass(frozen=True)
class CompactionResult:
    outcome: Outcome
    summary: Summary | None = None
    """The summary written (or, when nothing was to compact, the latest one)."""
    summarised: int = 0
    """How many messages this compaction read into the summary."""


class CompactionFailed(Exception):
    """The summary could not be made or stored (the claim was given back)."""


def summary_message(summary: Summary) -> dict[str, Any]:
    """The latest summary as the model receives it: a system message after the prompt."""
    return {
        "role": "system",
        "content": (
            f"Summary of the earlier conversation (messages {summary.first_seq}-{summary.last_seq}; "
            f"the most recent messages follow):\n{summary.text}"
        ),
    }


def after_turn_state(before: SessionState | None, first_seq: int, added: int) -> SessionState:
    """The session as it stands right after a turn was appended at `first_seq`: what a
    compaction needs, without reading it again."""
    head = before.head if before is not None and before.exists else None
    base = head.base_seq if head is not None else first_seq
    return SessionState(
        head=Head(
            next_seq=first_seq + added,
            base_seq=base,
            created_at=head.created_at if head is not None else time.time(),
            expires_at=head.expires_at if head is not None else None,
            system=[],
            title="",
        ),
        exists=True,
        message_count=first_seq + added - base,
        summary=before.summary if before is not None else None,
        summary_version=before.summary_version if before is not None else 0,
    )


class Compactor:
    def __init__(self, store: SessionStore, provider: ModelProvider, settings: Settings) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.failures = 0
        """Failed compactions in this process (also counted in telemetry and logged)."""

    def pending_range(self, state: SessionState) -> tuple[int, int]:
        """The messages outside the window that no summary covers yet (first, last)."""
        head = state.head
        if head is None:
            return 0, -1
        first = state.summary.last_seq + 1 if state.summary is not None else head.base_seq
        return first, head.next_seq - self.settings.history_window - 1

    def due(self, state: SessionState) -> bool:
        first, last = self.pending_range(state)
        return self.settings.compaction and last - first + 1 > self.settings.compaction_threshold

    def after_turn(self, key: SessionKey, state: SessionState, model: str) -> None:
        """Defer a compaction until after the response, if the turn made one due."""
        if self.due(state):
            after_response.defer(lambda: self._quietly(key, state, model))

    async def _quietly(self, key: SessionKey, state: SessionState, model: str) -> None:
        with contextlib.suppress(CompactionFailed):  # logged and counted; the next turn retries
            await self.compact(key, state, model=model)

    async def compact(
        self, key: SessionKey, state: SessionState, *, model: str, force: bool = False
    ) -> CompactionResult:
        """Summarise what is outside the window (`force`: even below the threshold)."""
        if not self.settings.compaction:
            return CompactionResult("off", state.summary)
        first, last = self.pending_range(state)
        if last < first or not (force or self.due(state)):
            return CompactionResult("nothing_to_compact", state.summary)
        last = min(last, first + MAX_BATCH - 1)
        claim_id = uuid.uuid4().hex
        if not await self.store.claim_compaction(key, state, claim_id, CLAIM_LEASE_SECONDS):
            return CompactionResult("busy", state.summary)
        try:
            messages = await self.store.read_messages(key, first, last)
            text = await self._summarise(state.summary, messages, first, last, model)
            covered_from = state.summary.first_seq if state.summary is not None else first
            summary = Summary(first_seq=covered_from, last_seq=last, text=text, created_at=time.time(), model=model)
            if not await self.store.save_summary(key, state, summary, claim_id):
                return CompactionResult("busy", state.summary)
        except Exception as error:
            self.failures += 1
            telemetry.add(compaction_failures=1)
            logger.warning(
                "compaction of session %s failed (%s); the next turn retries",
                key.session_id,
                type(error).__name__,
                extra={"session_id": key.session_id, "compaction_failed": 1},
            )
            try:
                await self.store.release_compaction(key, claim_id)
            except Exception:
                logger.warning("could not release a compaction claim; it lapses", extra={"session_id": key.session_id})
            raise CompactionFailed(str(error)) from error
        telemetry.add(compactions=1)
        logger.info(
            "compacted session %s: messages %d-%d",
            key.session_id,
            summary.first_seq,
            summary.last_seq,
            extra={"session_id": key.session_id, "summarised": len(messages)},
        )
        return CompactionResult("compacted", summary, summarised=len(messages))

    async def _summarise(
        self, previous: Summary | None, messages: list[StoredMessage], first: int, last: int, model: str
    ) -> str:
        lines = [transcript_line(m.seq, m.message, message_text(m.message)) for m in messages]
        covered_from = previous.first_seq if previous is not None else first
        request = ModelRequest(
            model=self.settings.models.get(model, model),
            messages=[
                {"role": "system", "content": system_prompt()},
                {
                    "role": "user",
                    "content": summary_input(previous.text if previous else None, first, last, covered_from, lines),
                },
            ],
            options={},
        )
        text = "".join(
            [event.text async for event in run_to_end(self.provider, request) if isinstance(event, TextDelta)]
        )
        if not text.strip():
            raise ValueError("the model returned an empty summary")
        return bound(text)
