"""Integrity guarantees of the store on DynamoDB Local, as a user sees them.

- A reused session id never reads an earlier life's messages (issue 9.2): DynamoDB's
  TTL deletes a session's items lazily and in no order, so its head can go first.
- A Responses turn is one transaction: whichever write fails, the client's retry
  leaves exactly one copy of the turn (issue 9.5).
- Deleting a session deletes everything that holds its content: its messages, its
  stored responses, the conversation name that pointed at it (issue 9.8).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore, session_pk
from core.store.keys import HEAD_SK, string_attr
from handler.app import create_app
from tests.conftest import table_items
from tests.reliability.faults import INTERNAL, LOST_RESPONSE, UNAVAILABLE, DynamoDBFaults, Fault

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
OWNER = "open"


@pytest.fixture
async def api(store: DynamoDBSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(sessions_table=store.table_name, history_window=4)
    app = create_app(ChatService(store, EchoProvider(), settings), settings=settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline.test", timeout=60) as http:
        yield http


async def chat(api: httpx.AsyncClient, text: str, session: str) -> str:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
    response = await api.post("/v1/chat/completions", json=body, headers={HEADER: session})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def output_text(body: dict[str, Any]) -> str:
    return "".join(part["text"] for item in body["output"] for part in item.get("content") or [])


# -- a reused id -----------------------------------------------------------------------


async def test_a_reused_id_reads_only_its_own_life(api: httpx.AsyncClient, store: DynamoDBSessionStore) -> None:
    for turn in range(6):
        await chat(api, f"old {turn}", "reused-id")
    # TTL takes the head first (it deletes in no particular order): the old life's
    # twelve messages are still in the partition when the client reuses its id.
    store.client.delete_item(
        TableName=store.table_name,
        Key={"pk": string_attr(session_pk(SessionKey(OWNER, "reused-id"))), "sk": string_attr(HEAD_SK)},
    )

    assert await chat(api, "new 0", "reused-id") == "Echo: new 0 (I was given 1 message.)"
    # The model sees the new life's history, not an empty window filled by the old life.
    assert await chat(api, "new 1", "reused-id") == "Echo: new 1 (I was given 3 messages.)"
    assert await chat(api, "new 2", "reused-id") == "Echo: new 2 (I was given 5 messages.)"

    listed = (await api.get("/v1/sessions/reused-id/messages")).json()["data"]
    assert [m["content"] for m in listed if m["role"] == "user"] == ["new 0", "new 1", "new 2"]


# -- one transaction per Responses turn ---------------------------------------------------

WRITE_FAULTS = [
    pytest.param("TransactWriteItems", INTERNAL, id="transaction-fails"),
    pytest.param("TransactWriteItems", UNAVAILABLE, id="transaction-unavailable"),
    pytest.param("PutItem", INTERNAL, id="put-fails"),
]


async def respond_until_ok(
    api: httpx.AsyncClient, faults: DynamoDBFaults, operation: str, fault: Fault, body: dict[str, Any]
) -> dict[str, Any]:
    """What an SDK does: retry a 5xx. The fault lasts for the first request only."""
    faults.always(operation, fault)
    for _attempt in range(4):
        response = await api.post("/v1/responses", json=body)
        faults.clear()
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code == 503, response.text
    raise AssertionError("the retry never succeeded")


def stored_user_texts(store: DynamoDBSessionStore) -> list[str]:
    """The user messages stored anywhere in the table."""
    texts = []
    for item in table_items(store.client, store.table_name):
        if item["sk"]["S"].startswith("MSG#"):
            message = json.loads(item["msg"]["S"])
            if message["role"] == "user":
                texts.append(message["content"])
    return texts


@pytest.mark.parametrize(("operation", "fault"), WRITE_FAULTS)
async def test_a_retried_response_turn_is_stored_once(
    api: httpx.AsyncClient, store: DynamoDBSessionStore, operation: str, fault: Fault
) -> None:
    first = (await api.post("/v1/responses", json={"model": "echo", "input": "one", "conversation": "c"})).json()
    with DynamoDBFaults(store.client) as faults:
        second = await respond_until_ok(
            api, faults, operation, fault, {"model": "echo", "input": "two", "conversation": "c"}
        )
        third = await respond_until_ok(
            api, faults, operation, fault, {"model": "echo", "input": "three", "previous_response_id": second["id"]}
        )
    assert output_text(second) == "Echo: two (I was given 3 messages.)"
    assert output_text(third) == "Echo: three (I was given 5 messages.)"
    # Exactly one copy of each turn in the whole table, in one session.
    assert sorted(stored_user_texts(store)) == ["one", "three", "two"]
    assert first["conversation"] == second["conversation"]


async def test_a_response_turn_whose_answer_was_lost_is_not_stored_twice(
    api: httpx.AsyncClient, store: DynamoDBSessionStore
) -> None:
    with DynamoDBFaults(store.client) as faults:
        # Applied by DynamoDB, then every answer lost: the store reads its commit back.
        faults.fail("TransactWriteItems", LOST_RESPONSE, LOST_RESPONSE, LOST_RESPONSE)
        response = await api.post("/v1/responses", json={"model": "echo", "input": "once", "conversation": "k"})
    assert response.status_code == 200, response.text
    again = await api.post("/v1/responses", json={"model": "echo", "input": "twice", "conversation": "k"})
    assert output_text(again.json()) == "Echo: twice (I was given 3 messages.)"
    assert sorted(stored_user_texts(store)) == ["once", "twice"]


# -- delete ----------------------------------------------------------------------------


async def test_deleting_a_session_deletes_its_responses_and_conversation(
    api: httpx.AsyncClient, store: DynamoDBSessionStore
) -> None:
    first = await api.post("/v1/responses", json={"model": "echo", "input": "private words", "conversation": "diary"})
    session = first.headers[HEADER]
    second = await api.post(
        "/v1/responses",
        json={"model": "echo", "input": "more private words", "previous_response_id": first.json()["id"]},
    )
    assert second.headers[HEADER] == session
    other = await api.post("/v1/responses", json={"model": "echo", "input": "another session"})

    deleted = await api.delete(f"/v1/sessions/{session}")
    assert deleted.status_code == 200, deleted.text

    for response in (first, second):
        assert (await api.get(f"/v1/responses/{response.json()['id']}")).status_code == 404
    # Nothing anywhere in the table still holds the session's words or names it.
    leftovers = [
        item
        for item in table_items(store.client, store.table_name)
        if "private words" in json.dumps(item) or session in json.dumps(item)
    ]
    assert leftovers == []
    # The conversation name starts afresh; the other session is untouched.
    fresh = await api.post("/v1/responses", json={"model": "echo", "input": "hello again", "conversation": "diary"})
    assert output_text(fresh.json()) == "Echo: hello again (I was given 1 message.)"
    assert (await api.get(f"/v1/responses/{other.json()['id']}")).status_code == 200


async def test_deleting_a_session_forgets_the_idempotent_answers_it_held(api: httpx.AsyncClient) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "remember this"}]}
    first = await api.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "k-1"})
    replay = await api.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.content == first.content  # the same bytes while the session exists
    session = first.headers[HEADER]

    assert (await api.delete(f"/v1/sessions/{session}")).status_code == 200
    again = await api.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "k-1"})
    # The deleted answer (and the deleted session's id) is never replayed: the request runs anew.
    assert again.status_code == 200
    assert again.headers[HEADER] != session and again.json()["id"] != first.json()["id"]
