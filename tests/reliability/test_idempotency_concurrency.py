"""200 idempotent requests at once, through a real uvicorn server on DynamoDB Local, all answer.

Before the fix, each idempotent request held one of the event loop's 40 worker
threads while it ran, and its store calls needed more from the same pool: 45 at once
never answered, and nothing after them did either. Here 160 requests carry keys of
their own and 40 share 8 keys (5 each, same body), all sent at once; every one must
answer 200 within the bound, each shared key with one answer, byte for byte, and one
stored turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from handler.deps import OPEN_PRINCIPAL
from tests.conftest import table_items
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
OWN_KEYS = 160
SHARED_KEYS = 8
PER_SHARED_KEY = 5
BOUND_SECONDS = 90


def body(text: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": f"{text} and a few more words to say"}]}


async def test_two_hundred_idempotent_requests_at_once_all_answer(
    local_table: tuple[Any, str], report: Callable[[str, str], None]
) -> None:
    client, name = local_table
    # Duplicates wait for the first of their key as long as the whole run may take.
    settings = Settings(sessions_table=name, idempotency_wait_seconds=BOUND_SECONDS)
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    app = create_app(ChatService(store, EchoProvider(delay_seconds=0.01), settings), settings=settings)
    plan = [(f"own-{i}", f"own {i}") for i in range(OWN_KEYS)]
    plan += [(f"shared-{k}", f"shared {k}") for k in range(SHARED_KEYS) for _ in range(PER_SHARED_KEY)]

    with LiveServer(app) as server:
        limits = httpx.Limits(max_connections=len(plan), max_keepalive_connections=len(plan))
        async with httpx.AsyncClient(base_url=server.url, timeout=BOUND_SECONDS, limits=limits) as http:
            started = time.monotonic()
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        http.post("/v1/chat/completions", json=body(text), headers={"Idempotency-Key": key})
                        for key, text in plan
                    ),
                    return_exceptions=True,
                ),
                BOUND_SECONDS,
            )
            took = time.monotonic() - started

    failures = [r if isinstance(r, BaseException) else r.status_code for r in responses]
    failures = [f for f in failures if f != 200]
    assert not failures, f"{len(failures)} of {len(plan)} did not answer 200: {failures[:5]}"
    answers: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for (key, _), response in zip(plan, responses, strict=True):
        assert isinstance(response, httpx.Response)
        answers[key].add((response.text, response.headers[HEADER]))
    assert all(len(seen) == 1 for seen in answers.values()), "a key answered twice differently"
    assert len({text for seen in answers.values() for text, _ in seen}) == OWN_KEYS + SHARED_KEYS

    for k in range(SHARED_KEYS):
        ((_, session),) = answers[f"shared-{k}"]
        stored = await store.load(SessionKey(OPEN_PRINCIPAL, session), 100)
        assert len(stored.messages) == 2, "a shared key stored its turn more than once"
    records = {item["pk"]["S"] for item in table_items(client, name) if item["pk"]["S"].startswith("IDEMPOTENCY#")}
    assert len(records) == OWN_KEYS + SHARED_KEYS
    report(
        "idempotency_concurrency",
        f"idempotency: {len(plan)} idempotent requests at once ({SHARED_KEYS} keys shared by "
        f"{PER_SHARED_KEY}), all 200 in {took:.1f} s",
    )
