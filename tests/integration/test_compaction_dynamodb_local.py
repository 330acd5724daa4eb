"""Compaction against DynamoDB Local: concurrent turns and compactions, as separate
Lambda containers would run them (a client, a store and a service each, sharing
nothing but the table), compact a session once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.compaction import Compactor
from core.providers.base import ModelRequest, ProviderEvent
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import NewTurn, SessionKey
from core.store.client import get_dynamodb_client
from core.store.dynamodb import DynamoDBSessionStore
from core.summary_prompt import is_summary_request
from handler.app import create_app
from tests.conftest import table_items

pytestmark = pytest.mark.integration

WINDOW = 4
THRESHOLD = 4
CONTAINERS = 6


class SlowSummaries:
    """The echo model, whose summaries take a while (so concurrent compactions overlap)."""

    name = "echo"

    def __init__(self, summaries: list[int]) -> None:
        self.echo = EchoProvider()
        self.summaries = summaries

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        if is_summary_request(request.messages):
            self.summaries.append(1)
            await asyncio.sleep(0.2)
        async for event in self.echo.stream(request):
            yield event


def container(name: str, summaries: list[int]) -> tuple[DynamoDBSessionStore, ChatService]:
    get_dynamodb_client.cache_clear()  # a client of its own, as in another process
    store = DynamoDBSessionStore(name, ttl_days=30, client=get_dynamodb_client())
    settings = Settings(sessions_table=name, history_window=WINDOW, compaction_threshold=THRESHOLD)
    return store, ChatService(store, SlowSummaries(summaries), settings)


def written_summaries(client: Any, name: str) -> list[dict[str, Any]]:
    return [item for item in table_items(client, name) if item["sk"]["S"].startswith("COMPACTION#")]


async def seed(store: DynamoDBSessionStore, session: str, count: int) -> SessionKey:
    key = SessionKey("open", session)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(count)]
    await store.append(key, NewTurn(messages=messages, system=[], title="seeded"), None, fresh_session=True)
    return key


async def test_concurrent_compactions_of_one_session_summarise_it_once(local_table: tuple[Any, str]) -> None:
    client, name = local_table
    summaries: list[int] = []
    containers = [container(name, summaries) for _ in range(CONTAINERS)]
    key = await seed(containers[0][0], "raced", 30)
    states = [await store.load(key, WINDOW) for store, _ in containers]
    outcomes = await asyncio.gather(
        *(
            Compactor(store, chat.provider, chat.settings).compact(key, state, model="echo")
            for (store, chat), state in zip(containers, states, strict=True)
        )
    )
    assert sorted(result.outcome for result in outcomes) == ["busy"] * (CONTAINERS - 1) + ["compacted"]
    assert len(summaries) == 1  # the model was asked once
    (written,) = written_summaries(client, name)
    assert written["last_seq"]["N"] == str(30 - WINDOW - 1)
    after = await containers[1][0].load(key, WINDOW)
    assert after.summary is not None and after.summary.last_seq == 30 - WINDOW - 1
    # a compaction that read the session before that summary was written cannot write another
    late = await Compactor(containers[2][0], containers[2][1].provider, containers[2][1].settings).compact(
        key, states[2], model="echo"
    )
    assert late.outcome == "busy" and len(written_summaries(client, name)) == 1


async def test_concurrent_turns_that_make_a_compaction_due_compact_once(local_table: tuple[Any, str]) -> None:
    client, name = local_table
    summaries: list[int] = []
    containers = [container(name, summaries) for _ in range(CONTAINERS)]
    await seed(containers[0][0], "busy", 12)  # 8 outside the window: due at the next turn

    async def turn(chat: ChatService, text: str) -> int:
        app = create_app(chat, settings=chat.settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            response = await api.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": text}]},
                headers={"X-Hermes-Session-Id": "busy"},
            )
        return response.status_code

    codes = await asyncio.gather(*(turn(chat, f"turn {i}") for i, (_, chat) in enumerate(containers)))
    assert codes == [200] * CONTAINERS
    assert len(summaries) == 1
    assert len(written_summaries(client, name)) == 1
    stored = await containers[0][0].load(SessionKey("open", "busy"), WINDOW)
    assert stored.message_count == 12 + 2 * CONTAINERS  # every turn stored, none lost to the compaction
