"""Record a run's events in small batches, and keep its lease.

Writes are bounded by time, not by tokens: the events that arrive within
`flush_seconds` (or `max_batch_bytes`, whichever comes first) go out as one batch, in
one `TransactWriteItems` with the update of the run's state (`core.store.events`). A
1,000-token answer streamed in 20 s is about 20 s / 0.25 s = 80 writes, whatever the
model's pace within that; one streamed in 2 s is about 8. A run waiting for its model
still renews its lease every `lease_seconds / 3`, so a run whose worker died is known
to be dead `lease_seconds` after its last write.

A cancel is a request on the run's state (`cancel_requested`): the worker's next
write is refused, and the worker itself ends the run, recording what it had pending
and the face's last events (`on_cancel`) under its own guard, so that every event it
handed to followers in this process is also the one recorded under its number. While
idle it looks for a cancel every `cancel_check_seconds`. Any other refused write means
the run is no longer this worker's (deleted, or ended as dead by a reader). Either
way the recorder calls `on_revoked`, which stops the producer (and the model call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from core.resumable.hub import HUB, Broadcast, Hub
from core.store.base import StoreUnavailable
from core.store.events import DynamoDBEventLog, RunRevoked, event_json
from core.store.keys import LogKey

logger = logging.getLogger("threadline.resumable")


@dataclass(frozen=True)
class RecordingPolicy:
    flush_seconds: float = 0.25
    """The longest an event waits before it is written (and what a follower in another
    process waits for it, beside its poll)."""
    max_batch_bytes: int = 32_000
    """A batch is written early when its events' JSON reaches this (before compression)."""
    lease_seconds: float = 30.0
    """A run not heard from for this long is dead: anyone may end it as failed."""
    poll_seconds: float = 0.1
    """How often a follower in another process reads the log while the run is live."""
    cancel_check_seconds: float = 1.0
    """How often an idle run (its model quiet) reads its state for a cancel."""


class Recorder:
    def __init__(
        self,
        log: DynamoDBEventLog,
        key: LogKey,
        *,
        worker: str,
        expires_at: int | None,
        policy: RecordingPolicy,
        hub: Hub = HUB,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.key = key
        self.worker = worker
        self.expires_at = expires_at
        self.policy = policy
        self.clock = clock
        self.hub = hub
        self.broadcast: Broadcast = hub.open(key.name)
        self.pending: list[tuple[int, str]] = []
        self.pending_bytes = 0
        self.recorded = -1
        self.revoked = False
        self.writes = 0
        self.on_revoked: Callable[[], None] = lambda: None
        self.on_cancel: Callable[[int], tuple[list[dict[str, Any]], dict[str, Any]]] = lambda _seq: ([], {})
        """Given the next sequence number: the events that end a cancelled run, and the
        state attributes to set (a Response body)."""
        self.last_added = -1
        self._sealed = False
        """Set once a write was refused: what the producer still makes is dropped."""
        self.reached_end = False
        """Past the point of no return: the turn is stored, or the producer's last event is
        in. A cancel asked after it is too late: the run is written as it ends."""
        self._last_check = time.monotonic()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_write = time.monotonic()
        self._closed = False

    # -- events in ------------------------------------------------------------------

    def add(self, seq: int, event: dict[str, Any]) -> None:
        """One event of the run: to this process's followers now, to the store soon."""
        if self._sealed:
            return
        text = event_json(event)
        self.last_added = max(self.last_added, seq)
        self.broadcast.publish(seq, text)
        if seq <= self.recorded:
            return  # already written (a terminal event written with the turn's commit)
        self.pending.append((seq, text))
        self.pending_bytes += len(text)
        if self.pending_bytes >= self.policy.max_batch_bytes:
            self._wake.set()

    # -- writes ---------------------------------------------------------------------

    async def run_flusher(self) -> None:
        """Until closed: flush what is pending every `flush_seconds`, heartbeat when idle."""
        while not self._closed and not self.revoked:
            with anyio.move_on_after(self.policy.flush_seconds):
                await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            idle = time.monotonic() - self._last_write
            try:
                if self.pending or idle >= self.policy.lease_seconds / 3:
                    await self.flush()
                elif time.monotonic() - self._last_check >= self.policy.cancel_check_seconds:
                    await self._check_cancel()
            except StoreUnavailable:
                logger.warning("could not record events; retrying", extra={"log": self.key.pk})

    async def _check_cancel(self) -> None:
        self._last_check = time.monotonic()
        state = await anyio.to_thread.run_sync(self.log.get_state, self.key)
        if state is None or (state.cancel_requested and not self.reached_end):  # deleted, or asked to stop
            async with self._lock:
                await self._refused()

    async def flush(
        self, *, status: str | None = None, attrs: dict[str, Any] | None = None, cancellable: bool = True
    ) -> None:
        """Write what is pending; with `status`, end the run (a run that reached its end
        is written as it ended, `cancellable=False`, even if a cancel came meanwhile)."""
        async with self._lock:
            await self._write(status=status, attrs=attrs, cancellable=cancellable and not self.reached_end)

    async def _write(self, *, status: str | None, attrs: dict[str, Any] | None, cancellable: bool = True) -> None:
        if self.revoked:
            return
        events = list(self.pending)
        try:
            await anyio.to_thread.run_sync(
                lambda: self.log.flush(
                    self.key,
                    events,
                    worker=self.worker,
                    lease_until=self.clock() + self.policy.lease_seconds,
                    expires_at=self.expires_at,
                    status=status,
                    attrs=attrs,
                    cancellable=cancellable,
                )
            )
        except RunRevoked:
            await self._refused()
            return
        self.writes += 1
        self._last_write = time.monotonic()
        if events:
            self.recorded = events[-1][0]
            del self.pending[: len(events)]
            self.pending_bytes = sum(len(text) for _seq, text in self.pending)

    @asynccontextmanager
    async def committing(self) -> AsyncIterator[list[tuple[int, str]]]:
        """For a commit that records the run's last events itself (the Responses turn's
        transaction): the pending events, with flushes held until it is done. The
        caller then calls `committed(last_seq)` (or `revoked_by_commit()`)."""
        async with self._lock:
            yield list(self.pending)

    def committed(self, last_seq: int) -> None:
        self.reached_end = True
        self.writes += 1
        self.recorded = last_seq
        self.pending = [event for event in self.pending if event[0] > last_seq]
        self.pending_bytes = sum(len(text) for _seq, text in self.pending)

    async def refused(self) -> None:
        """A write of the run outside the recorder (a commit) was refused."""
        async with self._lock:
            await self._refused()

    async def _refused(self) -> None:
        """Why the run's write was refused: a cancel (end it, as cancelled, with what this
        worker handed out) or the run taken away (stop). A run that has already reached
        its end (its last event is in) is not ended again: it just stops."""
        if self.revoked:
            return
        self._sealed = True  # nothing the producer makes from now on goes out
        try:
            state = await anyio.to_thread.run_sync(self.log.get_state, self.key)
            if (
                state is not None
                and state.cancel_requested
                and state.worker == self.worker
                and state.status == "in_progress"
                and not self.reached_end
            ):
                closing, attrs = self.on_cancel(self.last_added + 1)
                ending = [
                    (int(event.get("sequence_number", self.last_added + 1 + offset)), event_json(event))
                    for offset, event in enumerate(closing)
                ]
                events = [*self.pending, *ending]
                await anyio.to_thread.run_sync(
                    lambda: self.log.flush(
                        self.key,
                        events,
                        worker=self.worker,
                        lease_until=self.clock(),
                        expires_at=self.expires_at,
                        status="cancelled",
                        attrs=attrs,
                        cancellable=False,
                    )
                )
                # Recorded: now this process's followers may have the end too.
                for seq, text in ending:
                    self.broadcast.publish(seq, text)
                self.writes += 1
                if events:
                    self.recorded = events[-1][0]
                self.pending.clear()
        except (RunRevoked, StoreUnavailable):
            logger.warning("could not end a cancelled run", extra={"log": self.key.pk})
        self._revoke()

    def _revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            logger.info("run revoked: stopping", extra={"log": self.key.pk})
            self.on_revoked()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.hub.close(self.key.name, self.broadcast)
