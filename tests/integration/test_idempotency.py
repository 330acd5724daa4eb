"""`Idempotency-Key` on DynamoDB Local: one turn per key, identical answers, 409 and 422."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from core.store.keys import HEAD_SK, LINK_PREFIX, idempotency_pk, link_sk, session_pk
from handler.app import create_app
from handler.auth import principal_id
from tests.conftest import table_items
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"


def build(
    local_table: tuple[Any, str], *, delay: float = 0.0, wait: float = 5.0, window: int = 40
) -> tuple[Any, DynamoDBSessionStore]:
    client, name = local_table
    settings = Settings(
        sessions_table=name, api_keys=("alice", "bob"), idempotency_wait_seconds=wait, history_window=window
    )
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    return create_app(ChatService(store, EchoProvider(delay_seconds=delay), settings), settings=settings), store


@pytest.fixture
async def api(local_table: tuple[Any, str]) -> AsyncIterator[tuple[httpx.AsyncClient, DynamoDBSessionStore]]:
    app, store = build(local_table)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as http:
        yield http, store


def request(text: str, key: str, who: str = "alice", session: str | None = "s-idem") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {who}", "Idempotency-Key": key}
    if session:
        headers[HEADER] = session
    return {"json": {"model": "echo", "messages": [{"role": "user", "content": text}]}, "headers": headers}


async def messages(store: DynamoDBSessionStore, session: str, who: str = "alice") -> list[dict[str, Any]]:
    return (await store.load(SessionKey(principal_id(who), session), 100)).messages


async def test_a_retry_returns_the_same_response_and_stores_the_turn_once(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore],
) -> None:
    http, store = api
    first = await http.post("/v1/chat/completions", **request("pay me", "key-1"))
    again = await http.post("/v1/chat/completions", **request("pay me", "key-1"))
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers[HEADER] == "s-idem"
    assert len(await messages(store, "s-idem")) == 2


async def test_a_retry_without_the_session_header_gets_the_same_new_session(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore],
) -> None:
    http, _ = api
    first = await http.post("/v1/chat/completions", **request("new", "key-fresh", session=None))
    again = await http.post("/v1/chat/completions", **request("new", "key-fresh", session=None))
    assert first.headers[HEADER] == again.headers[HEADER]
    assert first.json()["id"] == again.json()["id"]


async def test_the_same_key_with_another_body_is_a_422(api: tuple[httpx.AsyncClient, DynamoDBSessionStore]) -> None:
    http, store = api
    await http.post("/v1/chat/completions", **request("one thing", "key-2"))
    other = await http.post("/v1/chat/completions", **request("another thing", "key-2"))
    assert other.status_code == 422
    validate(other.json(), "ErrorResponse")
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(await messages(store, "s-idem")) == 2


async def test_keys_are_scoped_to_their_principal(api: tuple[httpx.AsyncClient, DynamoDBSessionStore]) -> None:
    http, store = api
    mine = await http.post("/v1/chat/completions", **request("hello", "shared-key"))
    theirs = await http.post("/v1/chat/completions", **request("hello", "shared-key", who="bob"))
    assert mine.json()["id"] != theirs.json()["id"]
    assert len(await messages(store, "s-idem", "bob")) == 2


async def test_five_identical_requests_at_once_store_one_turn_and_answer_alike(
    local_table: tuple[Any, str],
) -> None:
    app, store = build(local_table, delay=0.02)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as http:
        responses = await asyncio.gather(
            *(http.post("/v1/chat/completions", **request("once", "key-5")) for _ in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.text for r in responses}) == 1
    validate(responses[0].json(), "CreateChatCompletionResponse")
    assert len(await messages(store, "s-idem")) == 2


async def test_a_key_still_running_past_the_wait_is_a_409(local_table: tuple[Any, str]) -> None:
    app, store = build(local_table, delay=0.2, wait=0.3)  # the answer takes ~2 s
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as http:
        first = asyncio.create_task(http.post("/v1/chat/completions", **request("slow", "key-busy")))
        await asyncio.sleep(0.3)
        busy = await http.post("/v1/chat/completions", **request("slow", "key-busy"))
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "idempotency_in_progress"
        assert (await first).status_code == 200
        replay = await http.post("/v1/chat/completions", **request("slow", "key-busy"))
        assert replay.json() == (await first).json()
    assert len(await messages(store, "s-idem")) == 2


async def test_a_failed_request_does_not_block_its_key(api: tuple[httpx.AsyncClient, DynamoDBSessionStore]) -> None:
    http, _ = api
    bad = request("x", "key-3")
    bad["json"]["model"] = "no-such-model"
    assert (await http.post("/v1/chat/completions", **bad)).status_code == 404
    good = await http.post("/v1/chat/completions", **request("x", "key-3"))
    assert good.status_code == 200


async def test_records_expire_through_the_tables_ttl(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str]
) -> None:
    http, _ = api
    await http.post("/v1/chat/completions", **request("x", "key-ttl"))
    client, name = local_table
    records = [item for item in table_items(client, name) if item["pk"]["S"].startswith("IDEMPOTENCY#")]
    assert len(records) == 1
    assert records[0]["pk"]["S"] == idempotency_pk(principal_id("alice"), "/v1/chat/completions", "key-ttl")
    assert abs(int(records[0]["expires_at"]["N"]) - (time.time() + 86400)) < 60


@pytest.mark.parametrize("key", ["", "k" * 256, "bad\nkey"])
async def test_malformed_keys_are_400s(api: tuple[httpx.AsyncClient, DynamoDBSessionStore], key: str) -> None:
    http, _ = api
    response = await http.post("/v1/chat/completions", **request("x", key))
    assert response.status_code == 400


async def test_a_retried_response_is_the_same_response_stored_once(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str]
) -> None:
    http, _ = api
    headers = {"Authorization": "Bearer alice", "Idempotency-Key": "resp-key"}
    body = {"model": "echo", "input": "hello responses"}
    first = await http.post("/v1/responses", json=body, headers=headers)
    again = await http.post("/v1/responses", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert first.headers[HEADER] == again.headers[HEADER]
    validate(first.json(), "Response")
    client, name = local_table
    stored = [item for item in table_items(client, name) if item["pk"]["S"].startswith("RESPONSE#")]
    assert len(stored) == 1
    other = await http.post("/v1/responses", json={**body, "input": "something else"}, headers=headers)
    assert other.status_code == 422


def idempotency_records(local_table: tuple[Any, str]) -> list[dict[str, Any]]:
    client, name = local_table
    return [item for item in table_items(client, name) if item["pk"]["S"].startswith("IDEMPOTENCY#")]


def links(local_table: tuple[Any, str]) -> list[dict[str, Any]]:
    client, name = local_table
    return [item for item in table_items(client, name) if item["sk"]["S"].startswith(LINK_PREFIX)]


def delete_session_following_links(client: Any, table: str, pk: str) -> None:
    """What a session's deletion does (docs/storage.md, rule 5): read the partition,
    delete every item a link names, then the partition's items, the head last."""
    items = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )["Items"]
    for item in items:
        if item["sk"]["S"].startswith(LINK_PREFIX):
            client.delete_item(TableName=table, Key={"pk": item["ref_pk"], "sk": item["ref_sk"]})
    for item in sorted(items, key=lambda item: item["sk"]["S"] == HEAD_SK):
        client.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})


async def test_each_key_has_a_partition_of_its_own_and_still_replays(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str]
) -> None:
    http, _ = api
    first = [await http.post("/v1/chat/completions", **request(text, key)) for text, key in (("a", "ka"), ("b", "kb"))]
    partitions = {item["pk"]["S"] for item in idempotency_records(local_table)}
    assert partitions == {idempotency_pk(principal_id("alice"), "/v1/chat/completions", key) for key in ("ka", "kb")}
    assert len(partitions) == 2
    again = [await http.post("/v1/chat/completions", **request(text, key)) for text, key in (("a", "ka"), ("b", "kb"))]
    assert [r.content for r in again] == [r.content for r in first]


async def test_requests_leave_nothing_behind_on_the_shared_dynamodb_client(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str]
) -> None:
    """Powertools' persistence layer adds an event hook to the client it is given; one
    per request grew the warm container's client without end, and every DynamoDB call
    of every request after it called them all."""
    http, _ = api
    client, _ = local_table

    def hooks() -> int:
        return len(client.meta.events._emitter._handlers.prefix_search("request-created.dynamodb.PutItem"))

    assert (await http.post("/v1/chat/completions", **request("x", "hook-0"))).status_code == 200
    before = hooks()
    for i in range(1, 6):
        assert (await http.post("/v1/chat/completions", **request("x", f"hook-{i}"))).status_code == 200
    assert hooks() == before


async def test_an_answer_in_a_session_is_named_by_a_link_in_that_session(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str]
) -> None:
    http, _ = api
    assert (await http.post("/v1/chat/completions", **request("x", "key-ref"))).status_code == 200
    (record,) = idempotency_records(local_table)
    (link,) = links(local_table)
    assert link["pk"]["S"] == session_pk(principal_id("alice"), "s-idem")
    assert link["sk"]["S"] == link_sk(record["pk"]["S"])
    assert (link["ref_pk"], link["ref_sk"]) == (record["pk"], record["sk"])
    assert int(link["expires_at"]["N"]) >= int(record["expires_at"]["N"])


async def test_links_never_push_the_history_window_out(local_table: tuple[Any, str]) -> None:
    app, _ = build(local_table, window=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as http:
        for i in range(3):
            await http.post("/v1/chat/completions", **request(f"turn {i}", f"key-window-{i}"))
        last = await http.post("/v1/chat/completions", **request("last", "key-window-last"))
    assert len(links(local_table)) == 4
    assert "(I was given 3 messages.)" in last.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("session", ["s-gone", None], ids=["named-session", "new-session"])
async def test_a_deleted_session_leaves_no_answer_to_replay(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str], session: str | None
) -> None:
    http, _ = api
    client, name = local_table
    first = await http.post("/v1/chat/completions", **request("secret", "key-del", session=session))
    created = first.headers[HEADER]
    delete_session_following_links(client, name, session_pk(principal_id("alice"), created))
    assert idempotency_records(local_table) == []
    again = await http.post("/v1/chat/completions", **request("secret", "key-del", session=session))
    assert again.status_code == 200
    assert again.json()["id"] != first.json()["id"]
    if session is None:
        assert again.headers[HEADER] != created


@pytest.mark.parametrize("moment", ["before-the-link", "before-completion"])
async def test_a_session_deleted_while_its_request_ran_leaves_nothing_to_replay(
    api: tuple[httpx.AsyncClient, DynamoDBSessionStore], local_table: tuple[Any, str], moment: str
) -> None:
    """The session is deleted after the turn was stored, either before the link that
    would have named the record is written, or after (the deletion then removes the
    unfinished record, and completing it writes it again)."""
    http, _ = api
    client, name = local_table
    pk = session_pk(principal_id("alice"), "s-idem")
    deleted: list[str] = []

    def delete_now(params: dict[str, Any], **_: Any) -> None:
        if deleted:
            return
        if moment == "before-the-link" and not params.get("Item", {}).get("sk", {}).get("S", "").startswith(
            LINK_PREFIX
        ):
            return
        deleted.append(moment)
        delete_session_following_links(client, name, pk)

    event = "before-parameter-build.dynamodb." + ("PutItem" if moment == "before-the-link" else "UpdateItem")
    client.meta.events.register(event, delete_now)
    try:
        first = await http.post("/v1/chat/completions", **request("secret", "key-race"))
    finally:
        client.meta.events.unregister(event, delete_now)
    assert first.status_code == 200 and deleted
    assert idempotency_records(local_table) == []
    assert links(local_table) == []
    again = await http.post("/v1/chat/completions", **request("secret", "key-race"))
    assert again.json()["id"] != first.json()["id"]
