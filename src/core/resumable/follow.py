"""Follow a run from any process: replay what was missed, then the live events.

In the process that runs it, a follower reads the run's broadcast (`hub`); anywhere
else it polls the store (`core.store.events`): one consistent Query every
`poll_seconds` returns the new batches and the run's state together. A follower never
sees an event twice or out of order (it asks for events after the last it gave, and
a batch is written once), and it ends when the run has ended and every event up to
the last recorded one has been given. A run whose lease lapsed (its worker died) is
ended as failed by the first follower that notices (`end_lapsed`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from core.resumable.hub import HUB, Event, Hub
from core.resumable.recorder import RecordingPolicy
from core.store.events import DynamoDBEventLog, LogRead, RunState
from core.store.keys import LogKey

OnLapsed = Callable[[RunState], Awaitable[None]]


async def follow(
    log: DynamoDBEventLog,
    key: LogKey,
    after: int,
    *,
    policy: RecordingPolicy,
    on_lapsed: OnLapsed,
    hub: Hub = HUB,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Event]:
    broadcast = hub.get(key.name)
    if broadcast is not None and broadcast.covers(after):
        async for seq, text in broadcast.follow(after):
            yield seq, text
            after = seq
    gave_end = False
    while True:
        read = await anyio.to_thread.run_sync(log.read, key, after)
        for seq, text in read.events:
            yield seq, text
            after = seq
            gave_end = state_seq_is_end(read, seq)
        state = read.state
        if state is None:
            return  # deleted meanwhile
        if state.finished and (after >= state.last_seq or not read.events):
            if state.ended_outside and after >= state.last_seq >= 0 and not gave_end:
                # Ended by a reader after its worker died: the client may have seen, from
                # the worker's own process, events it never recorded, under the numbers
                # the end now has. It gets the end, whatever number it is at.
                ending = await anyio.to_thread.run_sync(log.read, key, state.last_seq - 1)
                for seq, text in ending.events[-1:]:
                    yield seq, text
            return  # a consistent read of an ended run: nothing more will come
        if state.lapsed(clock()):
            await on_lapsed(state)
            continue
        # A queued run waits for its job (seconds, maybe minutes): no need to ask ten times a second.
        await anyio.sleep(policy.poll_seconds if state.status != "queued" else max(policy.poll_seconds, 1.0))


def state_seq_is_end(read: LogRead, seq: int) -> bool:
    """Whether `seq` is the last event of an ended run (so the follower gave the end)."""
    return read.state is not None and read.state.finished and seq == read.state.last_seq
