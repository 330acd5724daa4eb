"""Record a run's events in small batches, and keep its lease.

Writes are bounded by time, not by tokens: the events that arrive within
`flush_seconds` (or `max_batch_bytes`, whichever comes first) go out as one batch, in
one `TransactWriteItems` with the update of the run's state (`core.store.events`). A
1,000-token answer streamed in 20 s is about 20 s / 0.25 s = 80 writes, whatever the
model's pace within that; one streamed in 2 s is about 8. A run waiting for its model
still renews its lease every `lease_seconds / 3`, so a run whose worker died is known
to be dead `lease_seconds` after its last write.

A refused write means the run is no longer this worker's (cancelled, deleted): the
recorder calls `on_revoked`, which stops the producer (and with it the model call).
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
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_write = time.monotonic()
        self._closed = False

    # -- events in ------------------------------------------------------------------

    def add(self, seq: int, event: dict[str, Any]) -> None:
        """One event of the run: to this process's followers now, to the store soon."""
        text = event_json(event)
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
            if self.pending or idle >= self.policy.lease_seconds / 3:
                try:
                    await self.flush()
                except StoreUnavailable:
                    logger.warning("could not record events; retrying", extra={"log": self.key.pk})

    async def flush(self, *, status: str | None = None, attrs: dict[str, Any] | None = None) -> None:
        async with self._lock:
            await self._write(status=status, attrs=attrs)

    async def _write(self, *, status: str | None, attrs: dict[str, Any] | None) -> None:
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
                )
            )
        except RunRevoked:
            self._revoke()
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
        self.writes += 1
        self.recorded = last_seq
        self.pending = [event for event in self.pending if event[0] > last_seq]
        self.pending_bytes = sum(len(text) for _seq, text in self.pending)

    def _revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            logger.info("run revoked: stopping", extra={"log": self.key.pk})
            self.on_revoked()

    def revoked_by_commit(self) -> None:
        self._revoke()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.hub.close(self.key.name, self.broadcast)
