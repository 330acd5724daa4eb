"""Session management endpoints: listing by owner, messages in order, deletion of everything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}


@pytest.fixture
async def api(moto_table: tuple[Any, str]) -> AsyncIterator[httpx.AsyncClient]:
    client, name = moto_table
    settings = Settings(sessions_table=name, api_keys=("alice-key", "bob-key"))
    # Every turn moves its session in the listing here (no interval), so order is exact.
    store = DynamoDBSessionStore(name, ttl_days=30, client=client, listing_interval=0)
    service = ChatService(store, EchoProvider(), settings)
    transport = httpx.ASGITransport(app=create_app(service, settings=settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def say(api: httpx.AsyncClient, text: str, session: str, who: dict[str, str] = ALICE) -> None:
    response = await api.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": text}]},
        headers={**who, HEADER: session},
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.005)  # distinct activity times


async def test_sessions_are_listed_most_recently_active_first_with_pages(api: httpx.AsyncClient) -> None:
    await say(api, "First session, a rather long opening line that goes on and on and on beyond any title", "s1")
    await say(api, "second", "s2")
    await say(api, "third", "s3")
    await say(api, "back to the first", "s1")
    page = (await api.get("/v1/sessions", params={"limit": 2}, headers=ALICE)).json()
    assert [s["id"] for s in page["data"]] == ["s1", "s3"]
    assert page["has_more"] is True
    first = page["data"][0]
    assert first["object"] == "session" and first["message_count"] == 4
    assert first["title"].startswith("First session, a rather long") and len(first["title"]) <= 80
    assert first["updated_at"] >= first["created_at"]
    rest = (await api.get("/v1/sessions", params={"limit": 2, "after": page["next_cursor"]}, headers=ALICE)).json()
    assert [s["id"] for s in rest["data"]] == ["s2"]
    assert rest["has_more"] is False and rest["next_cursor"] is None


async def test_listing_uses_the_owner_index_and_never_scans(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    await say(api, "hello", "s-idx")
    await say(api, "hello bob", "s-bob", BOB)
    client, _ = moto_table
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    try:
        listed = (await api.get("/v1/sessions", headers=ALICE)).json()
    finally:
        client.meta.events.unregister("before-call.dynamodb")
    assert [s["id"] for s in listed["data"]] == ["s-idx"]
    # One Query per index shard and one for the earlier design's partition, then the
    # page's heads in one BatchGetItem: never a Scan.
    assert sorted(set(calls)) == ["BatchGetItem", "Query"]
    assert calls.count("Query") == 16 + 1 and calls.count("BatchGetItem") == 1


async def test_messages_come_in_order_with_pages(api: httpx.AsyncClient) -> None:
    for i in range(3):
        await say(api, f"q{i}", "s-msgs")
    page = (await api.get("/v1/sessions/s-msgs/messages", params={"limit": 4}, headers=ALICE)).json()
    assert [m["seq"] for m in page["data"]] == [0, 1, 2, 3]
    assert [m["role"] for m in page["data"]] == ["user", "assistant", "user", "assistant"]
    assert page["data"][2]["content"] == "q1"
    rest = (await api.get("/v1/sessions/s-msgs/messages", params={"after": page["next_cursor"]}, headers=ALICE)).json()
    assert [m["content"] for m in rest["data"]] == ["q2", "Echo: q2 (I was given 5 messages.)"]
    assert rest["has_more"] is False


async def test_deleting_a_session_removes_every_item_however_many(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    transcript = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(139)]
    created = await api.post("/v1/chat/completions", json={"model": "echo", "messages": transcript}, headers=ALICE)
    session_id = created.headers[HEADER]
    await say(api, "keep me", "s-keep")
    client, name = moto_table
    # heads, listings, messages, and the long session's summary (latest and listed)
    assert len(table_items(client, name)) == 1 + 1 + 140 + 1 + 1 + 2 + 2
    deleted = await api.delete(f"/v1/sessions/{session_id}", headers=ALICE)
    assert deleted.json() == {"id": session_id, "object": "session.deleted", "deleted": True}
    remaining = table_items(client, name)
    assert all(session_id not in item["pk"]["S"] for item in remaining)
    assert len(remaining) == 4
    assert (await api.get(f"/v1/sessions/{session_id}/messages", headers=ALICE)).status_code == 404
    assert (await api.delete(f"/v1/sessions/{session_id}", headers=ALICE)).status_code == 404


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/sessions/{id}/messages"), ("DELETE", "/v1/sessions/{id}")])
async def test_another_principals_session_is_the_same_404_as_a_missing_one(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    await say(api, "secret", "s-private")
    foreign = await api.request(method, path.format(id="s-private"), headers=BOB)
    missing = await api.request(method, path.format(id="s-nothing"), headers=BOB)
    assert foreign.status_code == missing.status_code == 404
    validate(foreign.json(), "ErrorResponse")
    assert foreign.text.replace("s-private", "ID") == missing.text.replace("s-nothing", "ID")
    assert (await api.get("/v1/sessions", headers=BOB)).json()["data"] == []
    assert (await api.get("/v1/sessions/s-private/messages", headers=ALICE)).status_code == 200


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"after": "not-a-cursor"}, {"after": "999999999999999#x y"}],
)
async def test_bad_paging_parameters_are_400s(api: httpx.AsyncClient, query: dict[str, str]) -> None:
    await say(api, "x", "s-page")
    for path in ("/v1/sessions", "/v1/sessions/s-page/messages"):
        if path.endswith("messages") and query.get("after", "").startswith("9"):
            continue
        response = await api.get(path, params=query, headers=ALICE)
        assert response.status_code == 400, (path, query, response.text)
        validate(response.json(), "ErrorResponse")


async def test_a_busy_session_moves_in_the_index_at_most_once_per_interval(moto_table: tuple[Any, str]) -> None:
    from core.store.base import NewTurn, SessionKey

    client, name = moto_table
    clock = [2_000_000_000.0]
    store = DynamoDBSessionStore(name, ttl_days=30, client=client, clock=lambda: clock[0], listing_interval=10)

    def turn(text: str) -> NewTurn:
        return NewTurn(messages=[{"role": "user", "content": text}], system=[], title=text)

    def listing_keys() -> dict[str, str]:
        return {i["session_id"]["S"]: i["gsi1sk"]["S"] for i in table_items(client, name) if i["sk"]["S"] == "LISTING"}

    one, two = SessionKey("alice", "s-one"), SessionKey("alice", "s-two")
    await store.append(one, turn("a"), await store.load(one, 10))
    clock[0] += 1
    await store.append(two, turn("b"), await store.load(two, 10))
    before = listing_keys()
    clock[0] += 1
    await store.append(one, turn("c"), await store.load(one, 10))
    assert listing_keys() == before  # within the interval: no index write
    page = await store.list_sessions("alice", limit=10, after=None)
    assert [s.session_id for s in page.items] == ["s-one", "s-two"]  # yet the page is in exact order
    clock[0] += 15  # past the interval, stretched by at most half of it for this session
    await store.append(one, turn("d"), await store.load(one, 10))
    assert listing_keys()["s-one"] > before["s-one"]  # past it, the entry moves
