"""The store and the service on the real DynamoDB Local: continuity, concurrency,
conflicts, pages over 1 MB, TTL and size limits behave as on AWS."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import NewTurn, SessionKey, TurnTooLarge
from core.store.dynamodb import ID_BYTES, MAX_ITEM_BYTES, MESSAGE_OVERHEAD_BYTES, DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.servers import LiveServer

HEADER = "X-Hermes-Session-Id"
KEY = SessionKey(owner="open", session_id="s-local")


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


def pair(question: str, answer: str) -> NewTurn:
    return NewTurn(
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        system=[],
        title=question[:80],
    )


@pytest.fixture
def server(local_table: tuple[Any, str]) -> Any:
    client, name = local_table
    settings = Settings(sessions_table=name)
    service = ChatService(
        DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(delay_seconds=0.01), settings
    )
    with LiveServer(create_app(service)) as live:
        yield live


async def test_two_turns_continue_one_session_over_http(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await http.post(
            "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "one"}]}
        )
        session_id = first.headers[HEADER]
        second = await http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "two"}]},
            headers={HEADER: session_id},
        )
    assert second.headers[HEADER] == session_id
    assert second.json()["choices"][0]["message"]["content"] == "Echo: two (I was given 3 messages.)"


async def test_ten_concurrent_turns_lose_nothing_and_never_interleave(
    server: LiveServer, store: DynamoDBSessionStore
) -> None:
    async def turn(i: int, http: httpx.AsyncClient) -> httpx.Response:
        return await http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": f"turn-{i}"}]},
            headers={HEADER: "s-concurrent"},
        )

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        responses = await asyncio.gather(*(turn(i, http) for i in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    state = await store.load(SessionKey(owner="open", session_id="s-concurrent"), 100)
    assert state.message_count == 20 and len(state.messages) == 20
    seen = set()
    for question, answer in zip(state.messages[::2], state.messages[1::2], strict=True):
        assert question["role"] == "user" and answer["role"] == "assistant"
        number = question["content"].removeprefix("turn-")
        assert re.fullmatch(rf"Echo: turn-{number} \(I was given \d+ messages?\.\)", answer["content"])
        seen.add(number)
    assert seen == {str(i) for i in range(10)}


async def test_a_conflict_is_retried_at_the_new_position(store: DynamoDBSessionStore) -> None:
    stale = await store.load(KEY, 10)
    await store.append(KEY, pair("q-first", "a-first"), stale)
    result = await store.append(KEY, pair("q-second", "a-second"), stale)
    assert result.conflicts == 1 and result.first_seq == 2
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["q-first", "a-first", "q-second", "a-second"]


async def test_a_window_larger_than_one_query_page_is_read_whole(
    store: DynamoDBSessionStore, local_table: tuple[Any, str]
) -> None:
    client, _ = local_table
    big = "z" * (300 * 1024)
    state = await store.load(KEY, 20)
    for i in range(5):  # 10 messages of ~300 KB: about 3 MB, over three 1 MB pages
        await store.append(KEY, pair(f"{i}:{big}", f"{i}:{big}"), state)
        state = await store.load(KEY, 20)
    pages: list[int] = []
    client.meta.events.register("after-call.dynamodb.Query", lambda **kw: pages.append(1))
    try:
        state = await store.load(KEY, 20)
    finally:
        client.meta.events.unregister("after-call.dynamodb.Query")
    assert len(pages) >= 3
    assert len(state.messages) == 10
    assert [m["content"].split(":")[0] for m in state.messages] == [str(i // 2) for i in range(10)]
    assert all(len(m["content"]) == len(big) + 2 for m in state.messages)


async def test_expired_items_are_filtered_on_read_before_ttl_deletes_them(local_table: tuple[Any, str]) -> None:
    client, name = local_table
    clock = [2_000_000_000.0]
    store = DynamoDBSessionStore(name, ttl_days=1, client=client, clock=lambda: clock[0])
    await store.append(KEY, pair("old", "old reply"), await store.load(KEY, 10))
    clock[0] += 86401
    assert len(table_items(client, name)) == 4  # head, listing, two messages: deletion is lazy
    state = await store.load(KEY, 10)
    assert not state.exists and state.messages == []
    await store.append(KEY, pair("new", "new reply"), state)
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["new", "new reply"]


async def test_a_message_too_big_for_an_item_is_refused_and_nothing_written(
    server: LiveServer, local_table: tuple[Any, str]
) -> None:
    client, name = local_table
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "q" * (410 * 1024)}]},
            headers={HEADER: "s-too-big"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert table_items(client, name) == []


async def test_the_largest_message_we_accept_fits_a_real_item(store: DynamoDBSessionStore) -> None:
    longest_key = SessionKey(owner="key-" + "f" * 24, session_id="s" * 128)  # the longest pk there is
    envelope = len('{"role":"user","content":""}')
    largest = "k" * (MAX_ITEM_BYTES - MESSAGE_OVERHEAD_BYTES - ID_BYTES - envelope)  # what check_turn lets through
    await store.append(longest_key, pair(largest, "ok"), await store.load(longest_key, 10))
    state = await store.load(longest_key, 10)
    assert state.messages[0]["content"] == largest
    with pytest.raises(TurnTooLarge):
        store.check_turn([{"role": "user", "content": largest + "k"}], fresh_session=False)


async def test_listing_and_deleting_on_dynamodb_local(
    store: DynamoDBSessionStore, local_table: tuple[Any, str]
) -> None:
    client, name = local_table
    big = NewTurn(messages=[{"role": "user", "content": f"m{i}"} for i in range(180)], system=[], title="big")
    await store.append(SessionKey("open", "s-big"), big, None, fresh_session=True)
    await store.append(SessionKey("open", "s-small"), pair("hi", "there"), None)
    listed = await store.list_sessions("open", limit=10, after=None)
    assert [s.session_id for s in listed.items] == ["s-small", "s-big"]
    assert [s.message_count for s in listed.items] == [2, 180]
    assert await store.delete_session(SessionKey("open", "s-big"))
    assert {item["pk"]["S"] for item in table_items(client, name)} == {"SESSION#open#s-small"}
    assert not await store.delete_session(SessionKey("open", "s-big"))
