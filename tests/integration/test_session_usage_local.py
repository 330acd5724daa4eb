"""Usage per session (issue 12.4) on the real DynamoDB Local: the head's totals move with
each turn's transaction, and concurrent writers with no lock in common lose no update."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import NewTurn, SessionKey, TurnUsage, UsageTotals
from core.store.client import get_dynamodb_client
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
KEY = SessionKey(owner="open", session_id="s-usage-local")


def turn(i: int) -> NewTurn:
    return NewTurn(
        messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
        system=[],
        title=f"q{i}",
        usage=TurnUsage(input_tokens=100 + i, output_tokens=1000 * (i + 1)),
    )


async def test_ten_concurrent_writers_without_a_shared_lock_sum_their_usage(local_table: tuple[Any, str]) -> None:
    """Ten stores, each its own client and lock (ten Lambda containers), all read the
    session first and then append at once: every lost race retries behind the winners,
    and each turn's usage is added exactly once."""
    _, name = local_table
    first = DynamoDBSessionStore(name, ttl_days=30)
    await first.append(KEY, turn(0), await first.load(KEY, 10))
    stores = [DynamoDBSessionStore(name, ttl_days=30, client=get_dynamodb_client()) for _ in range(10)]
    stale = [await store.load(KEY, 10) for store in stores]
    results = await asyncio.gather(
        *(store.append(KEY, turn(i), state) for i, (store, state) in enumerate(zip(stores, stale, strict=True), 1))
    )
    assert sum(r.conflicts for r in results) >= 9  # they raced on DynamoDB, not on a lock
    head = await first.head(KEY)
    assert head is not None and head.next_seq == 22
    assert head.usage == UsageTotals(
        input_tokens=sum(100 + i for i in range(11)), output_tokens=sum(1000 * (i + 1) for i in range(11)), turns=11
    )
    page = await first.list_sessions("open", limit=10, after=None)
    assert [s.usage for s in page.items] == [head.usage]


async def test_turns_over_http_show_their_totals_in_the_listing(local_table: tuple[Any, str]) -> None:
    client, name = local_table
    settings = Settings(sessions_table=name)
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), settings)
    with LiveServer(create_app(service)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            told = []
            for text in ("one", "two words", "now three words"):
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": "echo", "messages": [{"role": "user", "content": text}]},
                    headers={HEADER: "s-http-usage"},
                )
                assert response.status_code == 200, response.text
                told.append(response.json()["usage"])
            [entry] = (await http.get("/v1/sessions")).json()["data"]
    assert entry["id"] == "s-http-usage"
    assert entry["usage"] == {
        "input_tokens": sum(u["prompt_tokens"] for u in told),
        "output_tokens": sum(u["completion_tokens"] for u in told),
        "turns": 3,
    }
