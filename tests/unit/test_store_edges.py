"""Edges a review of the one-store change found, each pinned: what a user would hit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import ConversationPointer, NewTurn, SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.legacy import write_conversation_pointer

HEADER = "X-Hermes-Session-Id"


class CountingEcho(EchoProvider):
    """The echo model, counting its calls (to show a refused turn never reached it)."""

    calls = 0

    def stream(self, request: Any) -> Any:
        CountingEcho.calls += 1
        return super().stream(request)


@pytest.fixture
def store(moto_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = moto_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


@pytest.fixture
async def api(store: DynamoDBSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(sessions_table=store.table_name)
    app = create_app(ChatService(store, CountingEcho(), settings), settings=settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


def text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["output"][0]["content"][0]["text"])


async def test_a_turn_never_writes_back_metadata_updated_while_it_ran(store: DynamoDBSessionStore) -> None:
    key = SessionKey("open", "conv-meta")
    turn = NewTurn(messages=[{"role": "user", "content": "hi"}], system=[], title="hi", metadata={"topic": "old"})
    await store.append(key, turn, await store.load(key, 10))
    read_before = await store.load(key, 10)  # a turn reads the head, then the model runs...
    await store.update_metadata(key, {"topic": "new"})  # ...while the metadata is updated
    await store.append(key, NewTurn(messages=[{"role": "user", "content": "more"}], system=[], title=""), read_before)
    head = await store.head(key)
    assert head is not None and head.metadata == {"topic": "new"} and head.next_seq == 2


async def test_a_conversation_name_of_the_earlier_design_is_carried_over_only_once(
    api: httpx.AsyncClient, store: DynamoDBSessionStore
) -> None:
    first = await api.post("/v1/responses", json={"model": "echo", "input": "one"})
    pointer = ConversationPointer("legacy", first.json()["id"], first.headers[HEADER], position=2, expires_at=None)
    write_conversation_pointer(store.client, store.table_name, "open", pointer)
    assert text(await api.post("/v1/responses", json={"model": "echo", "input": "two", "conversation": "legacy"})) == (
        "Echo: two (I was given 3 messages.)"
    )
    assert (await api.delete("/v1/conversations/legacy")).status_code == 200
    # Deleted means deleted: the earlier chain does not come back under the name.
    assert text(
        await api.post("/v1/responses", json={"model": "echo", "input": "three", "conversation": "legacy"})
    ) == ("Echo: three (I was given 1 message.)")


async def test_an_after_beyond_any_item_is_a_404_not_a_500(api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={"items": [{"role": "user", "content": "x"}]})).json()[
        "id"
    ]
    for order in ("asc", "desc"):
        response = await api.get(
            f"/v1/conversations/{conversation}/items",
            params={"after": "msg_00e8d4a510000000000000000000", "order": order},
        )
        assert response.status_code == 404, response.text


async def test_input_items_list_every_input_of_a_long_request(api: httpx.AsyncClient) -> None:
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(150)]
    created = await api.post("/v1/responses", json={"model": "echo", "input": inputs})
    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"order": "asc", "limit": 100} | ({"after": after} if after else {})
        page = (await api.get(f"/v1/responses/{created.json()['id']}/input_items", params=params)).json()
        seen += [item["content"][0]["text"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [f"m{i}" for i in range(150)]


async def test_a_turn_too_large_for_one_transaction_is_refused_before_the_model_runs(
    api: httpx.AsyncClient, store: DynamoDBSessionStore
) -> None:
    await api.post("/v1/responses", json={"model": "echo", "input": "hi", "conversation": "busy"})
    CountingEcho.calls = 0
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(97)]
    refused = await api.post("/v1/responses", json={"model": "echo", "input": inputs, "conversation": "busy"})
    assert refused.status_code == 413, refused.text
    assert CountingEcho.calls == 0  # nothing billed for a turn that could not be kept


async def test_output_items_of_a_deleted_response_are_still_the_conversations(api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = (
        await api.post("/v1/responses", json={"model": "echo", "input": "hi", "conversation": conversation})
    ).json()
    assert (await api.delete(f"/v1/responses/{response['id']}")).status_code == 200
    item_id = response["output"][0]["id"]
    got = await api.get(f"/v1/conversations/{conversation}/items/{item_id}")
    assert got.status_code == 200 and got.json()["content"][0]["text"] == "Echo: hi (I was given 1 message.)"
    referenced = await api.post(
        "/v1/responses",
        json={
            "model": "echo",
            "conversation": conversation,
            "input": [{"type": "item_reference", "id": item_id}, {"role": "user", "content": "and"}],
        },
    )
    assert referenced.status_code == 200, referenced.text
    assert (await api.delete(f"/v1/conversations/{conversation}/items/{item_id}")).status_code == 200
    assert (await api.get(f"/v1/conversations/{conversation}/items/{item_id}")).status_code == 404


def test_no_item_is_left_when_a_long_first_turn_fails(store: DynamoDBSessionStore) -> None:
    import asyncio

    from botocore.exceptions import EndpointConnectionError

    client = store.client
    calls = {"n": 0}

    def fail_the_commit(**_kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the first part lands, the commit (with the head) never does
            raise EndpointConnectionError(endpoint_url="http://dynamodb")

    long_turn = NewTurn(messages=[{"role": "user", "content": f"m{i}"} for i in range(150)], system=[], title="long")
    client.meta.events.register("before-send.dynamodb.TransactWriteItems", fail_the_commit)
    try:
        with pytest.raises(Exception, match=r"could not write|did not answer"):
            asyncio.run(store.append(SessionKey("open", "s-long"), long_turn, None, fresh_session=True))
    finally:
        client.meta.events.unregister("before-send.dynamodb.TransactWriteItems", fail_the_commit)
    assert calls["n"] >= 2
    assert [i for i in table_items(client, store.table_name) if "s-long" in i["pk"]["S"]] == []


async def test_a_reused_id_never_takes_an_earlier_lifes_summary(store: DynamoDBSessionStore) -> None:
    from core.store.base import Summary

    key = SessionKey("open", "s-lives")
    turn = NewTurn(messages=[{"role": "user", "content": "old"}], system=[], title="old")
    await store.append(key, turn, await store.load(key, 10))
    state = await store.load(key, 10)
    assert await store.claim_compaction(key, state, "c1", 60)
    summary = Summary(first_seq=0, last_seq=57, text="the old life", created_at=0.0, model="echo")
    assert await store.save_summary(key, state, summary, "c1")
    # TTL took every item of that life but its summary; the id is used again.
    for item in table_items(store.client, store.table_name):
        if item["sk"]["S"] != "MSG#SUMMARY":
            store.client.delete_item(TableName=store.table_name, Key={"pk": item["pk"], "sk": item["sk"]})
    for i in range(60):
        await store.append(
            key,
            NewTurn(messages=[{"role": "user", "content": f"new {i}"}], system=[], title=""),
            await store.load(key, 10),
        )
    assert (await store.load(key, 10)).summary is None  # never the old life's summary
