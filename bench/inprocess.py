"""The app in this process, as a warm function holds it, and a client that calls it without a socket.

`httpx.ASGITransport` hands each request straight to the ASGI app on this event loop
(one loop for the whole run, as the streaming runtime keeps one for the container's
life); the store is the real DynamoDB one on DynamoDB Local, the model `echo` with no
delay. `TELEMETRY` is on, as deployed; its log lines and metrics go to /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import API_KEY, Lab

SESSION_HEADER = "X-Hermes-Session-Id"
READS = frozenset({"Query", "GetItem", "BatchGetItem", "Scan", "TransactGetItems"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def chat_body(text: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": text}]}


class CallCounter:
    """DynamoDB API calls made by the process's client, by operation name.

    Registered on botocore's `before-call.dynamodb` event of `core.store.client`'s
    client: it fires once per API call (not per HTTP retry).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, **kwargs: Any) -> None:
        with self._lock:
            self.calls[kwargs["model"].name] += 1

    def __enter__(self) -> CallCounter:
        self.client.meta.events.register("before-call.dynamodb", self._count, unique_id="bench-call-counter")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister("before-call.dynamodb", unique_id="bench-call-counter")

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)


@dataclass
class Timed:
    seconds: float
    calls: Counter[str]
    response: httpx.Response


@dataclass
class InProcessApp:
    client: httpx.AsyncClient
    counter: CallCounter

    async def turn(self, text: str, session: str | None = None) -> Timed:
        """One non-streamed chat turn; its time and the DynamoDB calls it made."""
        headers = {"Authorization": f"Bearer {API_KEY}"}
        if session is not None:
            headers[SESSION_HEADER] = session
        before = self.counter.snapshot()
        started = time.perf_counter()
        response = await self.client.post("/v1/chat/completions", json=chat_body(text), headers=headers)
        elapsed = time.perf_counter() - started
        calls = self.counter.snapshot()
        calls.subtract(before)
        if response.status_code != 200:
            raise RuntimeError(f"a turn answered {response.status_code}: {response.text[:300]}")
        return Timed(elapsed, +calls, response)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Telemetry writes one log line and one metrics blob per request to stdout: not into the table."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@asynccontextmanager
async def in_process_app(
    lab: Lab, table: str, *, history_window: int = 40, compaction: bool = False, provider: Any = None
) -> AsyncIterator[InProcessApp]:
    """Compaction is off unless asked for: the other benchmarks measure the turn itself
    (bench/compaction.py measures it on and off side by side); `provider` replaces echo."""
    from core.chat import build_service
    from core.settings import Settings
    from handler.app import create_app

    settings = Settings(
        sessions_table=table,
        model_provider="echo",
        models={"echo": "echo"},
        history_window=history_window,
        api_keys=(API_KEY,),
        telemetry=True,
        compaction=compaction,
    )
    service = build_service(settings)
    if provider is not None:
        from core.chat import ChatService

        service = ChatService(service.store, provider, settings)
    app = create_app(service, settings=settings)
    transport = httpx.ASGITransport(app=app)
    with CallCounter(lab.client()) as counter, quiet_stdout():
        async with httpx.AsyncClient(transport=transport, base_url="http://threadline.bench") as client:
            yield InProcessApp(client, counter)
