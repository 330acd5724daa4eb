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
from handler.app import create_app
from handler.auth import principal_id
from tests.conftest import table_items
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"


def build(local_table: tuple[Any, str], *, delay: float = 0.0, wait: float = 5.0) -> tuple[Any, DynamoDBSessionStore]:
    client, name = local_table
    settings = Settings(sessions_table=name, api_keys=("alice", "bob"), idempotency_wait_seconds=wait)
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
    assert records[0]["pk"]["S"] == f"IDEMPOTENCY#{principal_id('alice')}"
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
