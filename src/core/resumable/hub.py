"""The live events of the runs in this process, for followers in this process.

Under `make run` (one uvicorn process) the client that started a stream and every
client that reconnects follow the run here, with no added latency. On Lambda each
execution environment serves one request at a time, so a reconnecting client is
always in another one and follows the store instead (`core.resumable.follow`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

Event = tuple[int, str]
"""(sequence number, the event's JSON)."""


class Broadcast:
    """One run's events so far, and a signal for each new one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def publish(self, seq: int, text: str) -> None:
        self.events.append((seq, text))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def covers(self, after: int) -> bool:
        """Whether every event after `after` is (or will be) here."""
        return not self.events or self.events[0][0] <= after + 1

    async def follow(self, after: int) -> AsyncIterator[Event]:
        index = 0
        while True:
            while index < len(self.events):
                seq, text = self.events[index]
                index += 1
                if seq > after:
                    yield seq, text
            if self.closed:
                return
            changed = self._changed
            await changed.wait()


class Hub:
    def __init__(self) -> None:
        self._live: dict[str, Broadcast] = {}

    def open(self, name: str) -> Broadcast:
        broadcast = self._live[name] = Broadcast()
        return broadcast

    def get(self, name: str) -> Broadcast | None:
        """The run's broadcast if it runs on this event loop (a process may hold several
        servers, each with its loop: to the others it is like another process)."""
        broadcast = self._live.get(name)
        if broadcast is None or broadcast.loop is not asyncio.get_running_loop():
            return None
        return broadcast

    def close(self, name: str, broadcast: Broadcast) -> None:
        broadcast.close()
        if self._live.get(name) is broadcast:
            del self._live[name]


HUB = Hub()
