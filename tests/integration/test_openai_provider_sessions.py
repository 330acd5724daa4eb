"""The `openai` provider end to end: the official client -> our server -> a fake upstream.

Tool calls come back to the client and are kept in the session, so a later
tool-result message continues correctly; upstream failures reach the client as
the contract's errors, and nothing half-written is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from core.chat import ChatService
from core.providers.openai_compat import OpenAIProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.fakes.openai_upstream import FakeUpstream, ToolCall, drop, error, text, tool_calls
from tests.servers import LiveServer

HEADER = "X-Hermes-Session-Id"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key="sk-upstream") as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


@pytest.fixture
def client(upstream: FakeUpstream, store: DynamoDBSessionStore) -> Iterator[openai.OpenAI]:
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-upstream", timeout_seconds=5, max_retries=0)
    settings = Settings(sessions_table=store.table_name, model_provider="openai", models={"smart": "upstream-model-1"})
    with LiveServer(create_app(ChatService(store, provider, settings))) as live:
        yield openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def stored(store: DynamoDBSessionStore, session_id: str) -> list[dict[str, Any]]:
    import asyncio

    return asyncio.run(store.load(SessionKey(owner="open", session_id=session_id), 100)).messages


def test_a_tool_call_is_kept_and_its_result_continues_the_session(
    upstream: FakeUpstream, client: openai.OpenAI, store: DynamoDBSessionStore
) -> None:
    upstream.push(tool_calls(ToolCall("get_weather", {"city": "Paris"}, id="call_abc")))
    first = client.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        extra_headers={HEADER: "s-tools"},
    )
    forwarded = upstream.last.body
    assert forwarded is not None
    assert forwarded["model"] == "upstream-model-1"
    assert forwarded["tools"] == [WEATHER_TOOL] and forwarded["tool_choice"] == "auto"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_abc",
        "get_weather",
        {"city": "Paris"},
    )  # type: ignore[union-attr]

    upstream.push(text("It is sunny in Paris."))
    second = client.chat.completions.create(
        model="smart",
        messages=[{"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "clear"}'}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_headers={HEADER: "s-tools"},
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    history = upstream.last.body["messages"]  # type: ignore[index]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["id"] == "call_abc"
    assert history[2] == {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "clear"}'}
    assert [m["role"] for m in stored(store, "s-tools")] == ["user", "assistant", "tool", "assistant"]


def test_streamed_tool_call_deltas_reach_the_client(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(tool_calls(ToolCall("get_weather", {"city": "Oslo"}, id="call_s", fragments=4)))
    chunks = list(
        client.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "Oslo?"}],
            tools=[WEATHER_TOOL],
            stream=True,  # type: ignore[list-item]
        )
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) >= 4
    assert deltas[0].id == "call_s" and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_upstream_errors_reach_the_client_as_ours_and_store_nothing(
    upstream: FakeUpstream, client: openai.OpenAI, store: DynamoDBSessionStore
) -> None:
    upstream.push(error(429, "slow down"))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "a"}], extra_headers={HEADER: "s-err"}
        )
    upstream.push(error(500, "upstream broke"))
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "b"}], stream=True, extra_headers={HEADER: "s-err"}
        )
    assert failed.value.status_code == 502
    upstream.push(drop(("Half an", " answer")))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "c"}], stream=True, extra_headers={HEADER: "s-err"}
        ):
            pass
    assert stored(store, "s-err") == []
