"""One store, every OpenAI face (issue 11): the Conversations API, item ids that stay the
same on every face, `item_reference`, a response's input items and `GET /v1/models/{id}`.
Every body is checked against the official OpenAI schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}


@pytest.fixture
async def api(moto_table: tuple[Any, str]) -> AsyncIterator[httpx.AsyncClient]:
    client, name = moto_table
    settings = Settings(sessions_table=name, api_keys=("alice:alice-key", "bob:bob-key"))
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), settings)
    transport = httpx.ASGITransport(app=create_app(service, settings=settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ALICE) as http:
        yield http


def ok(response: httpx.Response, schema: str | None = None) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    if schema is not None:
        validate(body, schema)
    return body


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    validate(body, "ErrorResponse")
    return body["error"]  # type: ignore[no-any-return]


async def chat(api: httpx.AsyncClient, text: str, session: str) -> str:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
    return str(
        ok(await api.post("/v1/chat/completions", json=body, headers={HEADER: session}))["choices"][0]["message"][
            "content"
        ]
    )


async def test_a_conversation_is_a_session_on_every_face(api: httpx.AsyncClient) -> None:
    created = ok(
        await api.post(
            "/v1/conversations",
            json={"items": [{"type": "message", "role": "user", "content": "I am Ada."}], "metadata": {"topic": "t"}},
        ),
        "ConversationResource",
    )
    conversation = created["id"]
    assert conversation.startswith("conv_") and created["metadata"] == {"topic": "t"}
    # Continued with the session header on chat completions, and with `conversation` on Responses.
    assert await chat(api, "hello", conversation) == "Echo: hello (I was given 2 messages.)"
    response = ok(
        await api.post("/v1/responses", json={"model": "echo", "input": "again", "conversation": conversation})
    )
    assert response["output"][0]["content"][0]["text"] == "Echo: again (I was given 4 messages.)"
    # Listed among the sessions, and its items in order, each with a stable id.
    sessions = ok(await api.get("/v1/sessions"))["data"]
    assert conversation in [s["id"] for s in sessions]
    items = ok(
        await api.get(f"/v1/conversations/{conversation}/items", params={"order": "asc"}), "ConversationItemList"
    )
    assert [(i["type"], i["role"]) for i in items["data"]] == [
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    # The response's output item has the same id as a conversation item.
    assert items["data"][-1]["id"] == response["output"][0]["id"]
    newest_first = ok(await api.get(f"/v1/conversations/{conversation}/items"), "ConversationItemList")
    assert [i["id"] for i in newest_first["data"]] == [i["id"] for i in items["data"]][::-1]
    for item in items["data"]:
        one = ok(await api.get(f"/v1/conversations/{conversation}/items/{item['id']}"), "ConversationItem")
        assert one == item
    page = ok(await api.get(f"/v1/conversations/{conversation}/items", params={"order": "asc", "limit": 2}))
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = ok(
        await api.get(f"/v1/conversations/{conversation}/items", params={"order": "asc", "after": page["last_id"]})
    )
    assert [i["id"] for i in page["data"] + rest["data"]] == [i["id"] for i in items["data"]]


async def test_conversation_metadata_items_and_deletion(api: httpx.AsyncClient) -> None:
    conversation = ok(await api.post("/v1/conversations", json={}))["id"]
    updated = ok(
        await api.post(f"/v1/conversations/{conversation}", json={"metadata": {"a": "b"}}), "ConversationResource"
    )
    assert updated["metadata"] == {"a": "b"}
    assert ok(await api.get(f"/v1/conversations/{conversation}"))["metadata"] == {"a": "b"}
    added = ok(
        await api.post(
            f"/v1/conversations/{conversation}/items",
            json={"items": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]},
        ),
        "ConversationItemList",
    )
    assert [i["role"] for i in added["data"]] == ["user", "assistant"]
    assert await chat(api, "three", conversation) == "Echo: three (I was given 3 messages.)"
    ok(await api.delete(f"/v1/conversations/{conversation}/items/{added['data'][1]['id']}"), "ConversationResource")
    assert await chat(api, "four", conversation) == "Echo: four (I was given 4 messages.)"
    error(await api.get(f"/v1/conversations/{conversation}/items/{added['data'][1]['id']}"), 404)
    deleted = ok(await api.delete(f"/v1/conversations/{conversation}"), "DeletedConversationResource")
    assert deleted == {"id": conversation, "object": "conversation.deleted", "deleted": True}
    error(await api.get(f"/v1/conversations/{conversation}"), 404)


async def test_conversations_are_private_to_their_owner(api: httpx.AsyncClient) -> None:
    conversation = ok(await api.post("/v1/conversations", json={"items": [{"role": "user", "content": "x"}]}))["id"]
    item = ok(await api.get(f"/v1/conversations/{conversation}/items"))["data"][0]["id"]
    for method, path in [
        ("GET", f"/v1/conversations/{conversation}"),
        ("POST", f"/v1/conversations/{conversation}"),
        ("DELETE", f"/v1/conversations/{conversation}"),
        ("GET", f"/v1/conversations/{conversation}/items"),
        ("POST", f"/v1/conversations/{conversation}/items"),
        ("GET", f"/v1/conversations/{conversation}/items/{item}"),
        ("DELETE", f"/v1/conversations/{conversation}/items/{item}"),
    ]:
        body = (
            {"metadata": {}}
            if method == "POST" and path.endswith(conversation)
            else {"items": [{"role": "user", "content": "y"}]}
        )
        response = await api.request(method, path, headers=BOB, json=body if method == "POST" else None)
        assert error(response, 404)["code"] == "not_found", (method, path)
    assert len(ok(await api.get(f"/v1/conversations/{conversation}/items"))["data"]) == 1


async def test_item_references_resolve_to_the_callers_own_items(api: httpx.AsyncClient) -> None:
    first = ok(await api.post("/v1/responses", json={"model": "echo", "input": "hi", "store": True}))
    reference = {"type": "item_reference", "id": first["output"][0]["id"]}
    # What the Vercel AI SDK sends with store on: earlier turns, the answers by reference.
    second = ok(
        await api.post(
            "/v1/responses",
            json={
                "model": "echo",
                "input": [{"role": "user", "content": "hi"}, reference, {"role": "user", "content": "more"}],
            },
        )
    )
    assert second["output"][0]["content"][0]["text"] == "Echo: more (I was given 3 messages.)"
    # Another owner's item, or an unknown one, is a 404 naming it.
    theirs = await api.post(
        "/v1/responses", json={"model": "echo", "input": [reference, {"role": "user", "content": "x"}]}, headers=BOB
    )
    assert first["output"][0]["id"] in error(theirs, 404)["message"]
    unknown = await api.post(
        "/v1/responses",
        json={
            "model": "echo",
            "input": [{"type": "item_reference", "id": "msg_nope"}, {"role": "user", "content": "x"}],
        },
    )
    assert error(unknown, 404)["param"] == "input[0].id"


async def test_a_responses_input_items(api: httpx.AsyncClient) -> None:
    first = ok(await api.post("/v1/responses", json={"model": "echo", "input": "one"}))
    second = ok(
        await api.post(
            "/v1/responses",
            json={
                "model": "echo",
                "previous_response_id": first["id"],
                "input": [{"role": "user", "content": "two"}, {"role": "user", "content": "three"}],
            },
        )
    )
    listed = ok(await api.get(f"/v1/responses/{second['id']}/input_items"), "ResponseItemList")
    assert [i["content"][0]["text"] for i in listed["data"]] == ["three", "two"]  # newest first
    ascending = ok(await api.get(f"/v1/responses/{second['id']}/input_items", params={"order": "asc"}))
    assert [i["content"][0]["text"] for i in ascending["data"]] == ["two", "three"]
    error(await api.get(f"/v1/responses/{second['id']}/input_items", headers=BOB), 404)


async def test_models_are_retrieved_by_id(api: httpx.AsyncClient) -> None:
    assert ok(await api.get("/v1/models/echo"), "Model")["id"] == "echo"
    assert error(await api.get("/v1/models/gpt-none"), 404)["code"] == "model_not_found"
