"""Resumable chat answers (issue 13): a streamed chat completion that goes on when its
client leaves, and that the client resumes by session id.

A client opts in per request with `X-Threadline-Resumable: true` on a streamed
`POST /v1/chat/completions` (a plain stream is still cancelled when its client
leaves). The answer is then a run (`core.resumable`) recorded in the session's own
partition, after its head (docs/storage.md):

    STREAM                  the session's latest resumable answer (its stream id)
    STREAM#<id>#E<seq>      its chunks, in batches (by the last chunk's number)
    STREAM#<id>#S           its state: status, worker, lease, last chunk recorded

The stream id is the completion id every chunk carries (`chatcmpl-...`). Chunks are
numbered from 0 in the order they are sent, `data: [DONE]` excluded, so a client that
counted N chunks resumes with `GET /v1/sessions/{id}/stream?after=N` and gets chunk N
onwards, then the live ones, then `[DONE]`. The turn is stored when the model has
finished, whoever is connected then.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from core.chat import ChatService, PreparedTurn
from core.errors import ApiError, internal_error, not_found, unavailable
from core.resumable import runs
from core.resumable.follow import follow
from core.resumable.recorder import Recorder, RecordingPolicy
from core.sessions import RESUMABLE_HEADER
from core.sse import Recorded, recorded_frames, ticking
from core.store.base import SessionKey, StoreUnavailable
from core.store.errors import store_errors
from core.store.events import DynamoDBEventLog, RunState, event_json
from core.store.keys import STREAM_POINTER_SK, LogKey, chat_stream_log, number_attr, session_pk, string_attr

logger = logging.getLogger("threadline.chat_streams")

DONE_EVENT: dict[str, Any] = {"done": True}
"""Recorded last by an answer that ended well (or was cancelled): sent as `data: [DONE]`."""
DONE_TEXT = event_json(DONE_EVENT)
DIED = "The answer stopped before it finished: the process running it was interrupted. Nothing was stored."


@dataclass
class ChatRun:
    stream_id: str
    run: runs.Run
    failure: list[ApiError] = field(default_factory=list)
    """The model's failure, when it failed (the face may still answer with its status)."""


class ResumableChat:
    def __init__(
        self,
        chat: ChatService,
        log: DynamoDBEventLog,
        policy: RecordingPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chat = chat
        self.log = log
        self.policy = policy
        self.clock = clock

    async def start(self, turn: PreparedTurn) -> ChatRun:
        """Record the answer's start (and make it the session's latest), then run it."""
        stream_id = turn.completion_id
        pk = session_pk(turn.key.owner, turn.key.session_id)
        key = chat_stream_log(pk, stream_id)
        worker = "w_" + secrets.token_hex(8)
        expires = self._expiry(turn)
        pointer: dict[str, Any] = {
            "pk": string_attr(pk),
            "sk": string_attr(STREAM_POINTER_SK),
            "stream_id": string_attr(stream_id),
            "started_at": number_attr(round(self.clock(), 3)),
        }
        if expires is not None:
            pointer["expires_at"] = number_attr(expires)
        try:
            await anyio.to_thread.run_sync(
                lambda: self.log.open(
                    key,
                    worker=worker,
                    lease_until=self.clock() + self.policy.lease_seconds,
                    expires_at=expires,
                    attrs={"stream_id": string_attr(stream_id)},
                    also=[pointer],
                )
            )
        except StoreUnavailable:
            raise unavailable("The answer could not be recorded, so it was not started. Retry the request.") from None
        recorder = Recorder(self.log, key, worker=worker, expires_at=expires, policy=self.policy, clock=self.clock)
        recorder.on_cancel = lambda _seq: ([DONE_EVENT], {})
        turn.recorder = recorder
        failure: list[ApiError] = []
        counter = iter(range(1 << 62))

        def ending(last: dict[str, Any] | None) -> runs.Ending:
            return ("failed", {}) if last is None or "error" in last else ("completed", {})

        run = runs.start(
            _numbered(self.chat.stream(turn), failure), recorder, seq_of=lambda _event: next(counter), ending=ending
        )
        return ChatRun(stream_id=stream_id, run=run, failure=failure)

    def _expiry(self, turn: PreparedTurn) -> int | None:
        head = turn.state.head if turn.state is not None else None
        if head is not None and head.expires_at is not None and head.live(self.clock()):
            return head.expires_at
        ttl = int(getattr(self.chat.store, "ttl_seconds", 0))
        return int(self.clock()) + ttl if ttl else None

    # -- resume and cancel --------------------------------------------------------------

    async def latest(self, key: SessionKey) -> tuple[str, LogKey]:
        """The session's latest resumable answer; a 404 when it has none."""
        pk = session_pk(key.owner, key.session_id)
        try:
            stream_id = await anyio.to_thread.run_sync(self._pointer, pk)
        except StoreUnavailable:
            raise unavailable("The session store is unavailable right now; retry the request.") from None
        if stream_id is None:
            raise not_found(
                f"Session '{key.session_id[:128]}' has no resumable answer (start one with a streamed chat "
                f"completion and {RESUMABLE_HEADER}: true).",
                param="session_id",
            )
        return stream_id, chat_stream_log(pk, stream_id)

    def _pointer(self, pk: str) -> str | None:
        with store_errors():
            reply = self.log.client.get_item(
                TableName=self.log.table_name,
                Key={"pk": string_attr(pk), "sk": string_attr(STREAM_POINTER_SK)},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        if item is None or ("expires_at" in item and int(item["expires_at"]["N"]) <= self.clock()):
            return None
        return str(item["stream_id"]["S"])

    async def resume(self, key: SessionKey, after: int) -> tuple[str, AsyncIterator[tuple[int, str]]]:
        """The latest answer's chunks from number `after` on, then its live ones."""
        stream_id, log_key = await self.latest(key)

        async def on_lapsed(state: RunState) -> None:
            await self._end(log_key, state, "cancelled" if state.cancel_requested else "failed")

        return stream_id, follow(
            self.log, log_key, after - 1, policy=self.policy, on_lapsed=on_lapsed, clock=self.clock
        )

    async def cancel(self, key: SessionKey) -> dict[str, Any]:
        """Stop the session's latest answer if it is still running: its model call ends
        and its turn is not stored. Waits (10 s at most) for its worker to end it, or for
        its lease to lapse when the worker is gone."""
        stream_id, log_key = await self.latest(key)
        deadline = time.monotonic() + 10.0
        while True:
            state = await anyio.to_thread.run_sync(self.log.get_state, log_key)
            if state is None:
                raise not_found(f"Session '{key.session_id[:128]}' has no resumable answer.", param="session_id")
            if state.finished:
                return {
                    "object": "chat.completion.stream",
                    "id": stream_id,
                    "session_id": key.session_id,
                    "status": state.status,
                }
            if state.lapsed(self.clock()):
                await self._end(log_key, state, "cancelled")
            elif not state.cancel_requested:
                await anyio.to_thread.run_sync(self.log.request_cancel, log_key, state)
            if time.monotonic() > deadline:
                raise unavailable("The answer did not stop in time; its cancel is recorded, retry to see it end.")
            await anyio.sleep(self.policy.poll_seconds)

    async def _end(self, key: LogKey, state: RunState, status: str) -> bool:
        last = DONE_TEXT if status == "cancelled" else event_json(ApiError(500, DIED, code="worker_stopped").body())
        expires = int(state.item["expires_at"]["N"]) if "expires_at" in state.item else None
        return await anyio.to_thread.run_sync(
            lambda: self.log.end(
                key, state, status=status, last_events=[(state.last_seq + 1, last)], expires_at=expires
            )
        )


async def _numbered(chunks: AsyncIterator[dict[str, Any]], failure: list[ApiError]) -> AsyncIterator[dict[str, Any]]:
    """The answer's chunks, then the done marker; a failure becomes an error chunk (and
    is kept in `failure`), as a live stream sends it."""
    try:
        async for chunk in chunks:
            yield chunk
    except ApiError as error:
        failure.append(error)
        yield error.body()
        return
    except Exception:
        logger.exception("resumable answer failed")
        failure.append(internal_error())
        yield internal_error().body()
        return
    yield DONE_EVENT


def frame(text: str) -> bytes:
    """A recorded chunk as the SSE frame a live stream sends."""
    if text == DONE_TEXT:
        return b"data: [DONE]\n\n"
    return b"data: " + text.encode() + b"\n\n"


async def open_frames(
    events: AsyncIterator[Recorded], failure: list[ApiError] | None, keepalive_seconds: float
) -> AsyncIterator[bytes]:
    """A recorded answer's SSE frames, keepalives included. With `failure` (the run's
    own, in the process that runs it), this waits for the model's first event like a
    plain stream does, so a failure before any token is that HTTP status, not a stream;
    a resumed stream (None) starts at once."""
    ticks = ticking(events, keepalive_seconds)
    head: list[Recorded | None] = []
    if failure is not None:
        async for item in ticks:  # the role chunk, then the first model event or a tick
            head.append(item)
            if item is None or len(head) == 2:
                break
    if failure and len(head) == 2 and head[1] is not None and head[1][1].startswith('{"error"'):
        await ticks.aclose()
        raise failure[0]
    return recorded_frames(head, ticks, frame)
