"""The Responses API in-process (ASGI) on moto: chains, forks, conversations, streaming,
tools, errors and ownership, as a client sees them, plus what is stored."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.errors import provider_failed, rate_limited
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"

EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
}

TEXT_SEQUENCE_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_SEQUENCE_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def parse_sse(raw: str) -> list[dict[str, Any]]:
    """The events of a Responses stream; checks each frame's `event:` names its data's type."""
    events: list[dict[str, Any]] = []
    for block in raw.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: "), block
        assert lines[1].startswith("data: "), block
        assert len(lines) == 2, block
        event = json.loads(lines[1].removeprefix("data: "))
        assert event["type"] == lines[0].removeprefix("event: ")
        events.append(event)
    return events


def validate_events(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate(event, EVENT_SCHEMAS[event["type"]])
        validate(event, "ResponseStreamEvent")


class ScriptedModel(EchoProvider):
    """The echo model, unless a script is queued: then it plays the script's events
    (raising any exception in it). Remembers every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ModelRequest] = []
        self.scripts: list[list[ProviderEvent | Exception]] = []

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        if not self.scripts:
            return super().stream(request)
        return self._play(self.scripts.pop(0))

    @staticmethod
    async def _play(script: list[ProviderEvent | Exception]) -> AsyncIterator[ProviderEvent]:
        for step in script:
            if isinstance(step, Exception):
                raise step
            yield step


class CountingClient:
    """The boto3 client, counting the DynamoDB calls made through it."""

    COUNTED = frozenset(
        {"get_item", "put_item", "delete_item", "query", "transact_write_items", "batch_write_item", "update_item"}
    )

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self.COUNTED:
            return attribute

        def counted(**kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(**kwargs)

        return counted


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def counting(moto_table: tuple[Any, str]) -> CountingClient:
    return CountingClient(moto_table[0])


def make_api(
    counting: CountingClient, model: ScriptedModel, *, window: int = 40, keys: tuple[str, ...] = ()
) -> httpx.AsyncClient:
    settings = Settings(sessions_table="sessions-unit", history_window=window, api_keys=keys)
    store = DynamoDBSessionStore("sessions-unit", ttl_days=30, client=counting)
    app = create_app(ChatService(store, model, settings), settings=settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://threadline.test")


@pytest.fixture
async def api(counting: CountingClient, model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    async with make_api(counting, model) as http:
        yield http


async def create(api: httpx.AsyncClient, input: Any = "hello", **extra: Any) -> httpx.Response:
    return await api.post("/v1/responses", json={"model": "echo", "input": input, **extra})


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    validate(body, "Response")
    return body


def text_of(body: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    validate(body, "ErrorResponse")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if param is not None:
        assert body["error"]["param"] == param
    return body


def kinds(client: Any, table: str) -> Counter[str]:
    return Counter(
        item["pk"]["S"].split("#")[0] + ":" + item["sk"]["S"].split("#")[0] for item in table_items(client, table)
    )


# -- create, retrieve, delete -------------------------------------------------------


async def test_a_response_is_stored_and_retrieved(api: httpx.AsyncClient, moto_table: tuple[Any, str]) -> None:
    created = await create(api, "hello", metadata={"k": "v"}, temperature=0.5)
    body = ok(created)
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    assert text_of(body) == "Echo: hello (I was given 1 message.)"
    assert body["output"][0]["id"].startswith("msg_")
    assert body["usage"]["total_tokens"] > 0 and body["store"] is True
    assert body["metadata"] == {"k": "v"} and body["temperature"] == 0.5
    assert created.headers[HEADER]

    fetched = await api.get(f"/v1/responses/{body['id']}")
    assert ok(fetched) == body
    assert fetched.headers[HEADER] == created.headers[HEADER]

    # One response: its item, the session head, the input and the reply, and the link that
    # lets deleting the session delete the response. No transcript in the item.
    assert kinds(*moto_table) == Counter(
        {"RESPONSE:RESPONSE": 1, "SESSION:SESSION": 1, "SESSION:MSG": 2, "SESSION:LINK": 1, "SESSION:LISTING": 1}
    )
    item = next(i for i in table_items(*moto_table) if i["sk"]["S"] == "RESPONSE")
    assert set(item) == {
        "pk",
        "sk",
        "owner",
        "response_id",
        "session_id",
        "position",
        "created_at",
        "expires_at",
        "body",
        "input_count",
    }
    assert item["position"]["N"] == "2" and item["input_count"]["N"] == "1"
    assert "hello" not in json.dumps(json.loads(item["body"]["S"])["instructions"])


async def test_delete_forgets_the_response_only(api: httpx.AsyncClient, moto_table: tuple[Any, str]) -> None:
    first = ok(await create(api, "one"))
    second = ok(await create(api, "two", previous_response_id=first["id"]))
    deleted = await api.delete(f"/v1/responses/{first['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
    assert_error(await api.get(f"/v1/responses/{first['id']}"), 404)
    assert_error(await api.delete(f"/v1/responses/{first['id']}"), 404)
    assert_error(await create(api, "x", previous_response_id=first["id"]), 404, "previous_response_id")
    # The chain's later response still stands on the deleted one's turn.
    third = ok(await create(api, "three", previous_response_id=second["id"]))
    assert text_of(third) == "Echo: three (I was given 5 messages.)"


async def test_store_false_writes_nothing(
    api: httpx.AsyncClient, moto_table: tuple[Any, str], counting: CountingClient
) -> None:
    first = ok(await create(api, "one"))
    before = table_items(*moto_table)
    counting.calls.clear()
    response = await create(api, "two", previous_response_id=first["id"], store=False)
    body = ok(response)
    assert body["store"] is False and HEADER not in response.headers
    assert text_of(body) == "Echo: two (I was given 3 messages.)"  # the chain is read, not written
    assert table_items(*moto_table) == before
    assert not {"put_item", "transact_write_items", "delete_item"} & set(counting.calls)
    assert_error(await api.get(f"/v1/responses/{body['id']}"), 404)
    assert_error(await create(api, "x", previous_response_id=body["id"]), 404, "previous_response_id")


# -- chains, forks, conversations ------------------------------------------------------


async def test_a_chain_is_one_session_and_instructions_do_not_carry_over(
    api: httpx.AsyncClient, model: ScriptedModel
) -> None:
    first = await create(api, "one", instructions="Be brief.")
    session = first.headers[HEADER]
    assert model.requests[-1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
    ]
    second = await create(api, "two", previous_response_id=ok(first)["id"])
    assert second.headers[HEADER] == session
    assert ok(second)["previous_response_id"] == ok(first)["id"]
    assert text_of(ok(second)) == "Echo: two (I was given 3 messages.)"
    assert [m["role"] for m in model.requests[-1].messages] == ["user", "assistant", "user"]
    third = await create(api, "three", previous_response_id=ok(second)["id"], instructions="Now in French.")
    assert third.headers[HEADER] == session
    assert model.requests[-1].messages[0] == {"role": "system", "content": "Now in French."}
    assert [m.get("content") for m in model.requests[-1].messages[1:]] == [
        "one",
        "Echo: one (I was given 2 messages.)",
        "two",
        "Echo: two (I was given 3 messages.)",
        "three",
    ]


async def test_continuing_an_earlier_response_forks_a_new_session(
    api: httpx.AsyncClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    first = await create(api, "one")
    second = await create(api, "two", previous_response_id=ok(first)["id"])
    fork = await create(api, "other two", previous_response_id=ok(first)["id"])
    assert fork.headers[HEADER] != first.headers[HEADER]
    assert text_of(ok(fork)) == "Echo: other two (I was given 3 messages.)"
    assert [m["content"] for m in model.requests[-1].messages] == [
        "one",
        "Echo: one (I was given 1 message.)",
        "other two",
    ]
    # The original chain goes on where it was; the fork goes on in its own session.
    on_main = await create(api, "three", previous_response_id=ok(second)["id"])
    assert on_main.headers[HEADER] == first.headers[HEADER]
    assert text_of(ok(on_main)) == "Echo: three (I was given 5 messages.)"
    on_fork = await create(api, "fork three", previous_response_id=ok(fork)["id"])
    assert on_fork.headers[HEADER] == fork.headers[HEADER]
    assert [m["content"] for m in model.requests[-1].messages][-3:] == [
        "other two",
        "Echo: other two (I was given 3 messages.)",
        "fork three",
    ]
    # The fork's session holds a copy of the two messages before its turn, then its turns.
    forked = [i for i in table_items(*moto_table) if i["pk"]["S"].endswith(fork.headers[HEADER])]
    assert sorted(i["sk"]["S"] for i in forked if i["sk"]["S"].startswith("MSG#")) == [
        f"MSG#{n:012d}" for n in range(6)
    ]


async def test_reads_per_request_are_bounded(api: httpx.AsyncClient, counting: CountingClient) -> None:
    first = ok(await create(api, "one"))
    second = ok(await create(api, "two", previous_response_id=first["id"]))
    counting.calls.clear()
    ok(await create(api, "tip", previous_response_id=second["id"]))
    # The tip: one GetItem (the response), one Query (head + window), one transaction
    # (the turn and the response item together).
    assert counting.calls == Counter({"get_item": 1, "query": 1, "transact_write_items": 1})
    counting.calls.clear()
    ok(await create(api, "fork", previous_response_id=first["id"]))
    # A fork reads up to two Queries (the later turns came first), then writes a new session.
    assert counting.calls["get_item"] == 1 and counting.calls["query"] <= 2
    assert counting.calls["transact_write_items"] == 1 and counting.calls["put_item"] == 0
    counting.calls.clear()
    ok(await create(api, "fresh"))
    assert counting.calls == Counter({"transact_write_items": 1})


async def test_the_history_is_the_window_and_a_fork_copies_at_most_the_window(
    counting: CountingClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    async with make_api(counting, model, window=4) as api:
        ids = []
        previous: str | None = None
        for n in range(6):
            extra = {"previous_response_id": previous} if previous else {}
            previous = ok(await create(api, f"m{n}", **extra))["id"]
            ids.append(previous)
        assert [m["content"] for m in model.requests[-1].messages] == [
            "m3",
            "Echo: m3 (I was given 5 messages.)",
            "m4",
            "Echo: m4 (I was given 5 messages.)",
            "m5",
        ]
        fork = await create(api, "fork", previous_response_id=ids[3])  # history: m0..m3 and replies
        assert [m["content"] for m in model.requests[-1].messages] == [
            "m2",
            "Echo: m2 (I was given 5 messages.)",
            "m3",
            "Echo: m3 (I was given 5 messages.)",
            "fork",
        ]
        forked = [i for i in table_items(*moto_table) if i["pk"]["S"].endswith(fork.headers[HEADER])]
        assert len(forked) == 1 + 1 + 4 + 2 + 1  # head, listing, the window's copy, the new turn, the link


async def test_the_window_never_starts_with_a_tool_result(counting: CountingClient, model: ScriptedModel) -> None:
    async with make_api(counting, model, window=2) as api:
        model.scripts.append([ToolCallDelta(0, id="call_a", name="f", arguments="{}"), Finish("tool_calls")])
        first = ok(await create(api, "use the tool", tools=[{"type": "function", "name": "f"}]))
        second = ok(
            await create(
                api,
                [{"type": "function_call_output", "call_id": "call_a", "output": "42"}],
                previous_response_id=first["id"],
            )
        )
        ok(await create(api, "next", previous_response_id=second["id"]))
        # The window of 2 holds (tool result, reply); the cut drops the orphaned tool result.
        assert [m["role"] for m in model.requests[-1].messages] == ["assistant", "user"]


async def test_a_conversation_is_a_session_whichever_face_continues_it(
    api: httpx.AsyncClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    first = await create(api, "one", conversation="chat-1")
    assert ok(first)["conversation"] == {"id": "chat-1"}
    assert first.headers[HEADER] == "chat-1"  # the conversation's id is its session's id
    second = await create(api, "two", conversation={"id": "chat-1"})
    assert second.headers[HEADER] == "chat-1"
    assert text_of(ok(second)) == "Echo: two (I was given 3 messages.)"
    assert ok(second)["previous_response_id"] is None
    other = ok(await create(api, "elsewhere", conversation="chat-2"))
    assert text_of(other) == "Echo: elsewhere (I was given 1 message.)"

    # Continuing its latest response by id appends to the same session, and so does
    # the session header, on Responses and on chat completions alike.
    aside = await create(api, "aside", previous_response_id=ok(second)["id"])
    assert aside.headers[HEADER] == "chat-1"
    by_header = await api.post("/v1/responses", json={"model": "echo", "input": "three"}, headers={HEADER: "chat-1"})
    assert text_of(ok(by_header)) == "Echo: three (I was given 7 messages.)"
    assert ok(by_header)["conversation"] == {"id": "chat-1"}
    chat = await api.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "four"}]},
        headers={HEADER: "chat-1"},
    )
    assert chat.json()["choices"][0]["message"]["content"] == "Echo: four (I was given 9 messages.)"
    # No pointer items: a conversation is simply its session.
    assert not [i for i in table_items(*moto_table) if i["sk"]["S"] == "CONVERSATION"]


async def test_a_conversation_name_of_the_earlier_design_carries_its_chain_over_once(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    from core.store.base import ConversationPointer
    from tests.legacy import write_conversation_pointer

    first = ok(await create(api, "one"))
    second = await create(api, "two", previous_response_id=first["id"])
    old_session = second.headers[HEADER]
    client, name = moto_table
    # What the earlier design wrote for `conversation: "legacy"`: a pointer to the chain's tip.
    write_conversation_pointer(
        client, name, "open", ConversationPointer("legacy", ok(second)["id"], old_session, position=4, expires_at=None)
    )
    carried = await create(api, "three", conversation="legacy")
    assert carried.headers[HEADER] == "legacy"
    assert text_of(ok(carried)) == "Echo: three (I was given 5 messages.)"
    again = await create(api, "four", conversation="legacy")
    assert text_of(ok(again)) == "Echo: four (I was given 7 messages.)"


async def test_the_session_header_on_responses_follows_the_session_rules(api: httpx.AsyncClient) -> None:
    bad = await api.post("/v1/responses", json={"model": "echo", "input": "hi"}, headers={HEADER: "no spaces"})
    assert assert_error(bad, 400, HEADER)["error"]["code"] == "invalid_session_id"
    clash = await api.post(
        "/v1/responses", json={"model": "echo", "input": "hi", "conversation": "a"}, headers={HEADER: "b"}
    )
    assert "name different sessions" in assert_error(clash, 400, "conversation")["error"]["message"]
    elsewhere = ok(await create(api, "one", conversation="x"))
    other = await api.post(
        "/v1/responses",
        json={"model": "echo", "input": "hi", "previous_response_id": elsewhere["id"]},
        headers={HEADER: "y"},
    )
    assert (
        "is not the latest response of session 'y'"
        in assert_error(other, 400, "previous_response_id")["error"]["message"]
    )
    same = await api.post(
        "/v1/responses",
        json={"model": "echo", "input": "two", "previous_response_id": elsewhere["id"]},
        headers={HEADER: "x"},
    )
    assert text_of(ok(same)) == "Echo: two (I was given 3 messages.)"


async def test_a_deleted_session_ends_its_chain(api: httpx.AsyncClient) -> None:
    first = await create(api, "one", conversation="c")
    deleted = await api.delete(f"/v1/sessions/{first.headers[HEADER]}")
    assert deleted.status_code == 200, deleted.text  # a 404 here means deletion is not routed: a regression
    assert_error(await create(api, "two", previous_response_id=ok(first)["id"]), 404, "previous_response_id")
    again = ok(await create(api, "two", conversation="c"))  # a conversation starts afresh
    assert text_of(again) == "Echo: two (I was given 1 message.)"


# -- input items and tools --------------------------------------------------------------


async def test_input_items_become_chat_messages(api: httpx.AsyncClient, model: ScriptedModel) -> None:
    items = [
        {"role": "developer", "content": "Answer in English."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Go on."}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "7"}]},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "six"}, {"type": "input_text", "text": "plus one?"}],
        },
    ]
    ok(await create(api, items))
    assert model.requests[-1].messages == [
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "What is"},
        {
            "role": "assistant",
            "content": "Go on.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "7"},
        {"role": "user", "content": [{"type": "text", "text": "six"}, {"type": "text", "text": "plus one?"}]},
    ]


async def test_function_calls_round_trip_through_the_chain(
    api: httpx.AsyncClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    model.scripts.append(
        [
            ToolCallDelta(0, id="upstream_1", name="get_weather", arguments='{"ci'),
            ToolCallDelta(0, arguments='ty": "Oslo"}'),
            Finish("tool_calls", Usage(10, 5)),
        ]
    )
    first = ok(await create(api, "Weather in Oslo?", tools=tools, tool_choice="auto"))
    assert model.requests[-1].options["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert model.requests[-1].options["tool_choice"] == "auto"
    (call,) = first["output"]
    assert call["type"] == "function_call" and call["id"].startswith("fc_")
    assert call["call_id"] == "upstream_1" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    assert first["tools"][0]["name"] == "get_weather" and first["usage"]["input_tokens"] == 10

    second = ok(
        await create(
            api,
            [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 20 C"}],
            previous_response_id=first["id"],
            tools=tools,
        )
    )
    assert model.requests[-1].messages == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "upstream_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "upstream_1", "content": "Sunny, 20 C"},
    ]
    assert second["status"] == "completed"


async def test_a_tool_call_without_a_provider_id_gets_one_the_session_keeps(
    api: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.scripts.append([ToolCallDelta(0, name="f", arguments="{}"), Finish("tool_calls")])
    first = ok(await create(api, "go", tools=[{"type": "function", "name": "f"}]))
    call_id = first["output"][0]["call_id"]
    assert call_id.startswith("call_")
    ok(
        await create(
            api,
            [{"type": "function_call_output", "call_id": call_id, "output": "done"}],
            previous_response_id=first["id"],
        )
    )
    assert model.requests[-1].messages[1]["tool_calls"][0]["id"] == call_id


async def test_options_reach_the_model_in_chat_form(api: httpx.AsyncClient, model: ScriptedModel) -> None:
    body = ok(
        await create(
            api,
            "x",
            temperature=0.2,
            top_p=0.9,
            max_output_tokens=50,
            text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
            reasoning={"effort": "low"},
            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            tool_choice={"type": "function", "name": "f"},
            parallel_tool_calls=False,
            user="u-1",
        )
    )
    options = model.requests[-1].options
    assert options["temperature"] == 0.2 and options["top_p"] == 0.9 and options["max_tokens"] == 50
    assert options["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert options["reasoning_effort"] == "low" and options["user"] == "u-1"
    assert options["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert options["parallel_tool_calls"] is False
    assert body["tool_choice"] == {"type": "function", "name": "f"} and body["max_output_tokens"] == 50
    assert body["text"]["format"]["type"] == "json_schema" and body["parallel_tool_calls"] is False


async def test_a_length_cut_is_incomplete_and_still_stored(api: httpx.AsyncClient, model: ScriptedModel) -> None:
    model.scripts.append([TextDelta("partial"), Finish("length", Usage(3, 1))])
    body = ok(await create(api, "x", max_output_tokens=1))
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["completed_at"] is None
    assert ok(await api.get(f"/v1/responses/{body['id']}"))["status"] == "incomplete"


# -- streaming ------------------------------------------------------------------------


async def stream(api: httpx.AsyncClient, input: Any = "hello", **extra: Any) -> tuple[httpx.Response, str]:
    async with api.stream(
        "POST", "/v1/responses", json={"model": "echo", "input": input, "stream": True, **extra}
    ) as r:
        raw = "".join([chunk async for chunk in r.aiter_text()])
    return r, raw


async def test_a_streamed_response_follows_the_official_event_sequence(api: httpx.AsyncClient) -> None:
    response, raw = await stream(api, "one two three")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers[HEADER]
    assert "id:" not in raw and "retry:" not in raw
    events = parse_sse(raw)
    validate_events(events)
    types = [e["type"] for e in events]
    words = ["Echo:", "one", "two", "three", "(I", "was", "given", "1", "message.)"]
    assert types == TEXT_SEQUENCE_HEAD + ["response.output_text.delta"] * len(words) + TEXT_SEQUENCE_TAIL
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Echo: one two three (I was given 1 message.)"
    item_id = events[2]["item"]["id"]
    assert all(e.get("item_id", item_id) == item_id for e in events[2:-1])
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == len(words)
    # Stored before the stream's end: retrievable, and continuable, at once.
    assert ok(await api.get(f"/v1/responses/{final['id']}")) == final
    follow = ok(await create(api, "next", previous_response_id=final["id"]))
    assert text_of(follow) == "Echo: next (I was given 3 messages.)"


async def test_a_streamed_tool_call(api: httpx.AsyncClient, model: ScriptedModel) -> None:
    model.scripts.append(
        [
            TextDelta("Let me check."),
            ToolCallDelta(0, id="call_x", name="lookup", arguments='{"a":'),
            ToolCallDelta(0, arguments="1}"),
            ToolCallDelta(1, id="call_y", name="other", arguments="{}"),
            Finish("tool_calls", Usage(4, 4)),
        ]
    )
    _, raw = await stream(
        api, "go", tools=[{"type": "function", "name": "lookup"}, {"type": "function", "name": "other"}]
    )
    events = parse_sse(raw)
    validate_events(events)
    assert [e["type"] for e in events] == [
        *TEXT_SEQUENCE_HEAD,
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call", "function_call"]
    assert output[1]["arguments"] == '{"a":1}' and output[2]["call_id"] == "call_y"
    follow = ok(
        await create(
            api,
            [
                {"type": "function_call_output", "call_id": "call_x", "output": "1"},
                {"type": "function_call_output", "call_id": "call_y", "output": "2"},
            ],
            previous_response_id=events[-1]["response"]["id"],
        )
    )
    assert [m["role"] for m in model.requests[-1].messages] == ["user", "assistant", "tool", "tool"]
    assert model.requests[-1].messages[1]["content"] == "Let me check."
    assert follow["status"] == "completed"


async def test_a_failure_after_the_stream_began_is_response_failed_and_stores_nothing(
    api: httpx.AsyncClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    model.scripts.append([TextDelta("Half"), provider_failed()])
    response, raw = await stream(api, "x")
    assert response.status_code == 200
    events = parse_sse(raw)
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "The model provider failed to answer."}
    # Nothing reaches a session; the response itself is kept as failed (a stored
    # stream is recorded, issue 13), with the events its client saw.
    assert not [item for item in table_items(*moto_table) if item["pk"]["S"].startswith("SESSION#")]
    kept = await api.get(f"/v1/responses/{failed['id']}")
    assert kept.status_code == 200 and kept.json()["status"] == "failed"
    assert kept.json()["error"] == failed["error"]
    replay = await api.get(f"/v1/responses/{failed['id']}", params={"stream": "true"})
    assert parse_sse(replay.text) == events


async def test_a_failure_before_the_first_token_is_an_http_status(
    api: httpx.AsyncClient, model: ScriptedModel, moto_table: tuple[Any, str]
) -> None:
    model.scripts.append([rate_limited()])
    response, raw = await stream(api, "x")
    assert response.status_code == 429
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    model.scripts.append([rate_limited()])
    assert_error(await create(api, "x"), 429)
    assert not [item for item in table_items(*moto_table) if item["pk"]["S"].startswith("SESSION#")]


async def test_a_store_failure_at_the_end_of_a_stream_is_response_failed(
    api: httpx.AsyncClient, counting: CountingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store.base import StoreUnavailable
    from core.store.dynamodb import DynamoDBSessionStore

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")

    monkeypatch.setattr(DynamoDBSessionStore, "append", broken)
    _, raw = await stream(api, "x")
    events = parse_sse(raw)
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    assert "could not be saved" in events[-1]["response"]["error"]["message"]
    assert_error(await create(api, "x"), 503)


async def test_keepalive_comments_while_the_model_is_quiet(
    counting: CountingClient, moto_table: tuple[Any, str]
) -> None:
    settings = Settings(sessions_table="sessions-unit")
    store = DynamoDBSessionStore("sessions-unit", ttl_days=30, client=counting)
    service = ChatService(store, EchoProvider(delay_seconds=0.25), settings)
    app = create_app(service, settings=settings, keepalive_seconds=0.1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        _, raw = await stream(api, "a b")
    assert ": keepalive\n\n" in raw
    validate_events(parse_sse(raw))


# -- errors and ownership ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "web_search_call", "id": "x"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": []}, "input"),
        ({}, "input"),
        ({"input": 5}, "input"),
        ({"input": "x", "temperature": "hot"}, "temperature"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "conversation": "bad name!"}, "conversation"),
        ({"input": "x", "conversation": "c", "previous_response_id": "resp_1"}, "conversation"),
    ],
)
async def test_invalid_requests_are_400s_naming_the_parameter(
    api: httpx.AsyncClient, body: dict[str, Any], param: str, moto_table: tuple[Any, str]
) -> None:
    assert_error(await api.post("/v1/responses", json={"model": "echo", **body}), 400, param)
    assert table_items(*moto_table) == []


async def test_bodies_that_are_not_json_objects_are_400s(api: httpx.AsyncClient) -> None:
    assert_error(await api.post("/v1/responses", content=b"{nope"), 400)
    assert_error(await api.post("/v1/responses", json=[1]), 400)
    assert_error(await api.post("/v1/responses", content=b""), 400)


async def test_unknown_ids_and_models_are_404s(api: httpx.AsyncClient) -> None:
    assert_error(await create(api, "x", previous_response_id="resp_nope"), 404, "previous_response_id")
    assert_error(await create(api, "x", previous_response_id="no#such/id"), 404, "previous_response_id")
    assert_error(await api.get("/v1/responses/resp_nope"), 404)
    assert_error(await api.delete("/v1/responses/resp_nope"), 404)
    body = assert_error(await api.post("/v1/responses", json={"model": "gpt-9", "input": "x"}), 404, "model")
    assert body["error"]["code"] == "model_not_found"


async def test_another_principals_response_is_the_same_404_as_a_missing_one(
    counting: CountingClient, model: ScriptedModel
) -> None:
    async with make_api(counting, model, keys=("key-a", "key-b")) as api:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        mine = await api.post("/v1/responses", json={"input": "secret", "conversation": "c"}, headers=a)
        rid = ok(mine)["id"]
        missing = "resp_" + "0" * 48

        def same_404(theirs: httpx.Response, absent: httpx.Response) -> None:
            assert theirs.status_code == absent.status_code == 404
            assert theirs.json() == json.loads(absent.text.replace(missing, rid))

        same_404(await api.get(f"/v1/responses/{rid}", headers=b), await api.get(f"/v1/responses/{missing}", headers=b))
        same_404(
            await api.delete(f"/v1/responses/{rid}", headers=b), await api.delete(f"/v1/responses/{missing}", headers=b)
        )
        same_404(
            await api.post("/v1/responses", json={"input": "x", "previous_response_id": rid}, headers=b),
            await api.post("/v1/responses", json={"input": "x", "previous_response_id": missing}, headers=b),
        )
        # The same conversation name is another conversation for another principal.
        theirs = ok(await api.post("/v1/responses", json={"input": "hi", "conversation": "c"}, headers=b))
        assert text_of(theirs) == "Echo: hi (I was given 1 message.)"
        # And the owner still has everything.
        assert ok(await api.get(f"/v1/responses/{rid}", headers=a))["id"] == rid
        assert (await api.get(f"/v1/responses/{rid}")).status_code == 401


async def test_a_response_too_large_to_store_is_a_413_and_stores_nothing(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    body = assert_error(await create(api, "x", instructions="y" * 500_000), 413)
    assert body["error"]["code"] == "request_too_large"
    assert table_items(*moto_table) == []


async def test_expiry_follows_the_session(api: httpx.AsyncClient, moto_table: tuple[Any, str]) -> None:
    first = await create(api, "one", conversation="c")
    ok(await create(api, "two", previous_response_id=ok(first)["id"]))
    items = table_items(*moto_table)
    head = next(i for i in items if i["sk"]["S"] == "SESSION")
    others = [i for i in items if i["sk"]["S"] == "RESPONSE"]
    assert len(others) == 2
    assert all(int(i["expires_at"]["N"]) <= int(head["expires_at"]["N"]) for i in others)
    assert all(int(head["expires_at"]["N"]) - int(i["expires_at"]["N"]) <= 1 for i in others)


# -- inputs the official-spec fuzzer and issue 16 reported -----------------------------


@pytest.mark.parametrize("role", [{}, [], {"a": [1]}])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_role_that_is_not_a_string_is_a_400_naming_it(
    api: httpx.AsyncClient, moto_table: tuple[Any, str], role: Any, stream: bool
) -> None:
    """It was a 500: `role in MESSAGE_ROLES` on an unhashable value raised TypeError."""
    response = await api.post("/v1/responses", json={"model": "echo", "stream": stream, "input": [{"role": role}]})
    body = assert_error(response, 400, "input[0].role")
    assert "use user, system, developer or assistant" in body["error"]["message"]
    assert table_items(*moto_table) == []


@pytest.mark.parametrize("continues", [{}, {"conversation": "c"}, {"previous_response_id": "first"}])
async def test_without_input_a_turn_is_a_400_that_says_input_is_required(
    api: httpx.AsyncClient, continues: dict[str, str]
) -> None:
    """The spec makes `input` optional; Threadline needs new input on every turn, and says so."""
    if continues.get("previous_response_id") == "first":
        continues = {"previous_response_id": ok(await create(api, "one"))["id"]}
    elif continues:
        ok(await create(api, "one", **continues))
    body = assert_error(await api.post("/v1/responses", json={"model": "echo", **continues}), 400, "input")
    assert body["error"]["code"] == "missing_required_parameter"
    assert "does not run the model on the history alone" in body["error"]["message"]


@pytest.mark.parametrize("value", ["true", "True", "1"])
async def test_retrieving_a_response_as_a_stream_is_a_400(api: httpx.AsyncClient, value: str) -> None:
    """Not an SSE replay (not supported yet), and not JSON a streaming client would misread."""
    rid = ok(await create(api, "one"))["id"]
    body = assert_error(await api.get(f"/v1/responses/{rid}", params={"stream": value}), 400, "stream")
    assert body["error"]["code"] == "unsupported_parameter"
    assert ok(await api.get(f"/v1/responses/{rid}", params={"stream": "false"}))["id"] == rid
