"""The Responses API through the official `openai` client, against a real uvicorn server
on DynamoDB Local: create / retrieve / delete, the `responses.stream()` helper, chains,
forks, conversation names, concurrency and ownership."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from core.chat import ChatService
from core.providers.base import Finish, TextDelta, ToolCallDelta, Usage
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.schemas import validate
from tests.servers import LiveServer
from tests.unit.test_responses_api import (
    TEXT_SEQUENCE_HEAD,
    TEXT_SEQUENCE_TAIL,
    ScriptedModel,
    parse_sse,
    validate_events,
)

HEADER = "X-Hermes-Session-Id"


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


def serve(
    store: DynamoDBSessionStore, model: EchoProvider | None = None, *, keys: tuple[str, ...] = (), window: int = 40
) -> LiveServer:
    settings = Settings(sessions_table=store.table_name, api_keys=keys, history_window=window)
    app = create_app(ChatService(store, model or EchoProvider(), settings), settings=settings)
    return LiveServer(app)


@pytest.fixture
def server(store: DynamoDBSessionStore) -> Iterator[LiveServer]:
    with serve(store) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_create_retrieve_and_delete(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="echo", input="hello", instructions="Be kind.")
    validate(json.loads(raw.text), "Response")
    response = raw.parse()
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Echo: hello (I was given 2 messages.)"
    assert response.instructions == "Be kind." and response.usage is not None
    session = raw.headers[HEADER]

    fetched = client.responses.with_raw_response.retrieve(response.id)
    validate(json.loads(fetched.text), "Response")
    assert fetched.parse().output_text == response.output_text
    assert fetched.headers[HEADER] == session

    assert client.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_the_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="echo", input="stream me please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:4] == TEXT_SEQUENCE_HEAD and types[-4:] == TEXT_SEQUENCE_TAIL
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) == len(final.output_text.split())  # word by word, as the model produced them
    assert deltas[-1].snapshot == final.output_text == "Echo: stream me please (I was given 1 message.)"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.status == "completed"
    # Stored before `response.completed`: continuable at once.
    follow = client.responses.create(model="echo", input="and then", previous_response_id=final.id)
    assert follow.output_text == "Echo: and then (I was given 3 messages.)"


def test_every_streamed_frame_matches_the_official_schemas(server: LiveServer) -> None:
    with httpx.stream(
        "POST", f"{server.url}/v1/responses", json={"model": "echo", "input": "hi there", "stream": True}
    ) as response:
        assert response.headers[HEADER]
        raw = "".join(response.iter_text())
    events = parse_sse(raw)
    validate_events(events)
    assert [e["type"] for e in events][-1] == "response.completed"


def test_function_calls_with_the_stream_helper(store: DynamoDBSessionStore) -> None:
    model = ScriptedModel()
    model.scripts.append(
        [
            ToolCallDelta(0, id="call_w", name="get_weather", arguments='{"city":'),
            ToolCallDelta(0, arguments=' "Oslo"}'),
            Finish("tool_calls", Usage(5, 5)),
        ]
    )
    model.scripts.append([TextDelta("It is sunny in Oslo."), Finish("stop", Usage(9, 5))])
    tools: list[Any] = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": False,
        }
    ]
    with serve(store, model) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        with client.responses.stream(model="echo", input="Weather in Oslo?", tools=tools) as stream:
            events = list(stream)
            first = stream.get_final_response()
        assert "response.function_call_arguments.done" in [e.type for e in events]
        (call,) = first.output
        assert call.type == "function_call" and call.call_id == "call_w" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Oslo"}
        second = client.responses.create(
            model="echo",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}],
            tools=tools,
        )
    assert second.output_text == "It is sunny in Oslo."
    assert [m["role"] for m in model.requests[-1].messages] == ["user", "assistant", "tool"]
    assert model.requests[-1].messages[1]["tool_calls"][0]["id"] == "call_w"


def test_chains_forks_and_conversations(client: openai.OpenAI, store: DynamoDBSessionStore) -> None:
    first = client.responses.with_raw_response.create(model="echo", input="one")
    session = first.headers[HEADER]
    one = first.parse()
    two = client.responses.with_raw_response.create(model="echo", input="two", previous_response_id=one.id)
    assert two.headers[HEADER] == session
    assert two.parse().output_text == "Echo: two (I was given 3 messages.)"
    fork = client.responses.with_raw_response.create(model="echo", input="two again", previous_response_id=one.id)
    assert fork.headers[HEADER] != session
    assert fork.parse().output_text == "Echo: two again (I was given 3 messages.)"
    three = client.responses.create(model="echo", input="three", previous_response_id=two.parse().id)
    assert three.output_text == "Echo: three (I was given 5 messages.)"
    chain = store.client.query(
        TableName=store.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"SESSION#open#{session}"}},
    )["Items"]
    messages = [item for item in chain if item["sk"]["S"].startswith("MSG#")]
    assert len(messages) == 6  # three turns: the fork went elsewhere

    a = client.responses.create(model="echo", input="hi", conversation="project-x")
    assert a.conversation is not None and a.conversation.id == "project-x"
    b = client.responses.create(model="echo", input="more", conversation={"id": "project-x"})
    assert b.output_text == "Echo: more (I was given 3 messages.)"
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(model="echo", input="x", conversation="project-x", previous_response_id=b.id)
    assert both.value.param == "conversation"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="echo", input="x", previous_response_id="resp_unknown")
    assert unknown.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError) as no_model:
        client.responses.create(model="nope", input="x")
    assert no_model.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad_item:
        client.responses.create(model="echo", input=[{"type": "reasoning", "id": "rs_1", "summary": []}])
    assert bad_item.value.param == "input[0].type"


def test_store_false_keeps_nothing(client: openai.OpenAI, local_table: tuple[Any, str]) -> None:
    response = client.responses.create(model="echo", input="ephemeral", store=False)
    assert response.output_text == "Echo: ephemeral (I was given 1 message.)"
    assert table_items(*local_table) == []
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_concurrent_continuations_of_one_response_both_land_in_commit_order(
    store: DynamoDBSessionStore,
) -> None:
    """Documented behaviour: two requests continuing the same tip both append to its
    session; the one that commits second goes after the first (its model did not see
    it), and the conversation ends at the later one."""
    with serve(store, EchoProvider(delay_seconds=0.05)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        root = client.responses.with_raw_response.create(model="echo", input="root", conversation="race")
        session = root.headers[HEADER]
        results: dict[str, Any] = {}

        def go(name: str) -> None:
            raw = client.responses.with_raw_response.create(model="echo", input=name, conversation="race")
            results[name] = (raw.headers[HEADER], raw.parse())

        threads = [threading.Thread(target=go, args=(name,)) for name in ("left", "right")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert {results[name][0] for name in results} == {session}
        latest = client.responses.create(model="echo", input="after", conversation="race")
    # Both read the same tip (each model saw only the root turn and its own input) ...
    assert all(results[name][1].output_text.endswith("(I was given 3 messages.)") for name in results)
    state = asyncio.run(store.load(SessionKey(owner="open", session_id=session), 20))
    contents = [m["content"] for m in state.messages]
    assert len(contents) == 8 and contents[:2] == ["root", "Echo: root (I was given 1 message.)"]
    # ... and both were kept, one after the other, each turn's input and reply adjacent.
    for index in (2, 4):
        assert contents[index] in ("left", "right")
        assert contents[index + 1].startswith(f"Echo: {contents[index]} ")
    assert contents[6] == "after" and latest.output_text == "Echo: after (I was given 7 messages.)"


def test_another_principals_response_is_a_404_everywhere(store: DynamoDBSessionStore) -> None:
    with serve(store, keys=("key-alice", "key-bob")) as live:
        alice = openai.OpenAI(base_url=f"{live.url}/v1", api_key="key-alice", max_retries=0)
        bob = openai.OpenAI(base_url=f"{live.url}/v1", api_key="key-bob", max_retries=0)
        mine = alice.responses.create(model="echo", input="private", conversation="shared-name")
        missing = "resp_" + "f" * 48
        for attempt in (
            lambda rid: bob.responses.retrieve(rid),
            lambda rid: bob.responses.delete(rid),
            lambda rid: bob.responses.create(model="echo", input="x", previous_response_id=rid),
        ):
            with pytest.raises(openai.NotFoundError) as theirs:
                attempt(mine.id)
            with pytest.raises(openai.NotFoundError) as absent:
                attempt(missing)
            assert theirs.value.body == json.loads(json.dumps(absent.value.body).replace(missing, mine.id))
        fresh = bob.responses.create(model="echo", input="hi", conversation="shared-name")
        assert fresh.output_text == "Echo: hi (I was given 1 message.)"
        assert alice.responses.retrieve(mine.id).output_text == mine.output_text


def test_a_client_that_disconnects_mid_stream_stores_nothing_unless_stored(
    store: DynamoDBSessionStore, local_table: tuple[Any, str]
) -> None:
    """A plain stream (`store: false`) is cancelled when its client leaves, as for chat:
    nothing is kept and a retry starts clean. A stored stream is recorded and runs on
    (issue 13): its turn is stored, and the client may come back for the rest."""
    with serve(store, EchoProvider(delay_seconds=0.1)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        first = client.responses.create(model="echo", input="root")
        before = table_items(*local_table)
        with client.responses.stream(
            model="echo", input="one two three four five six", previous_response_id=first.id, store=False
        ) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    break
        time.sleep(1.5)  # longer than the rest of the answer would have taken
        assert table_items(*local_table) == before
        with client.responses.stream(
            model="echo", input="one two three four five six", previous_response_id=first.id
        ) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    left = event.item_id.split("_")[1][:48]
                    break
        time.sleep(1.5)
        kept = client.responses.retrieve("resp_" + left)
        assert kept.status == "completed" and kept.output_text.startswith("Echo: one two three four five six")
        again = client.responses.create(model="echo", input="retry", previous_response_id=first.id)
    assert again.output_text == "Echo: retry (I was given 3 messages.)"
