"""One OS process of the multi-process test: its own DynamoDB client, its own store,
no lock shared with anyone, turns on one session through the chat service as a Lambda
container runs them. Prints one JSON line: the retries each turn needed, and failures.

    python -m tests.reliability.turn_worker TABLE SESSION WORKER TURNS GO_FILE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import AppendResult
from core.store.dynamodb import DynamoDBSessionStore
from core.wire import ChatCompletionRequest


class RecordingStore(DynamoDBSessionStore):
    """The real store; it only remembers how many conflicts each append met."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conflicts: list[int] = []

    async def append(self, *args: Any, **kwargs: Any) -> AppendResult:
        result = await super().append(*args, **kwargs)
        self.conflicts.append(result.conflicts)
        return result


def wait_for_start(store: DynamoDBSessionStore, worker: int, go_file: str) -> None:
    """Connect, say so, and wait for the start line shared by every process."""
    store.client.describe_table(TableName=store.table_name)
    with open(f"{go_file}.ready-{worker}", "w"):
        pass
    while not os.path.exists(go_file):
        time.sleep(0.005)


async def run_turns(store: RecordingStore, session: str, worker: int, turns: int) -> dict[str, Any]:
    service = ChatService(store, EchoProvider(), Settings(sessions_table=store.table_name))
    failures: list[str] = []
    tokens = {"input": 0, "output": 0}  # the usage each stored turn reported to its client
    started = time.monotonic()
    for turn in range(turns):
        request = ChatCompletionRequest.model_validate(
            {"model": "echo", "messages": [{"role": "user", "content": f"w{worker}-t{turn}"}]}
        )
        try:
            prepared = await service.prepare(request, session_header=session, owner="open")
            body = await service.complete(prepared)
            tokens["input"] += body["usage"]["prompt_tokens"]
            tokens["output"] += body["usage"]["completion_tokens"]
        except Exception as error:  # reported to the test, which fails on any
            failures.append(f"turn {turn}: {type(error).__name__}: {getattr(error, 'message', error)}")
    return {
        "worker": worker,
        "conflicts": store.conflicts,
        "failures": failures,
        "tokens": tokens,
        "seconds": round(time.monotonic() - started, 2),
    }


if __name__ == "__main__":
    table, session, worker, turns, go_file = sys.argv[1:6]
    recording = RecordingStore(table, ttl_days=30)
    wait_for_start(recording, int(worker), go_file)
    print(json.dumps(asyncio.run(run_turns(recording, session, int(worker), int(turns)))))
