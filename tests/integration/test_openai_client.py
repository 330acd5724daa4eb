"""The official `openai` client against a real uvicorn server on DynamoDB Local."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.schemas import validate
from tests.servers import LiveServer

HEADER = "X-Hermes-Session-Id"


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


def serve(store: DynamoDBSessionStore, *, delay: float = 0.0, keepalive: float = 15.0) -> LiveServer:
    settings = Settings(sessions_table=store.table_name)
    service = ChatService(store, EchoProvider(delay_seconds=delay), settings)
    return LiveServer(create_app(service, keepalive_seconds=keepalive))


@pytest.fixture
def server(store: DynamoDBSessionStore) -> Iterator[LiveServer]:
    with serve(store) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_a_non_streamed_turn_and_its_continuation(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello"}]
    )
    session_id = raw.headers[HEADER]
    completion = raw.parse()
    validate(json.loads(raw.text), "CreateChatCompletionResponse")
    assert completion.choices[0].message.content == "Echo: hello (I was given 1 message.)"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    again = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "and again"}], extra_headers={HEADER: session_id}
    )
    assert again.headers[HEADER] == session_id
    assert again.parse().choices[0].message.content == "Echo: and again (I was given 3 messages.)"


def test_a_streamed_turn_with_usage(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="echo",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={HEADER: "sdk-stream"},
    ) as response:
        assert response.headers[HEADER] == "sdk-stream"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this please (I was given 1 message.)"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == len(text.split())  # word by word
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_every_streamed_frame_matches_the_official_schema(server: LiveServer) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={
            "model": "echo",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    for line in lines[:-1]:
        validate(json.loads(line.removeprefix("data: ")), "CreateChatCompletionStreamResponse")


def test_chunks_reach_the_client_as_the_model_produces_them(store: DynamoDBSessionStore) -> None:
    with serve(store, delay=0.15) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        arrivals: list[float] = []
        stream = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "a b c d"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    reply = "Echo: a b c d (I was given 1 message.)"
    assert len(arrivals) == len(reply.split())
    assert min(gaps) > 0.1  # one chunk per word, never batched


def test_keepalive_comments_while_the_model_is_quiet_do_not_upset_the_sdk(store: DynamoDBSessionStore) -> None:
    with serve(store, delay=0.3, keepalive=0.1) as live:
        with httpx.stream(
            "POST",
            f"{live.url}/v1/chat/completions",
            json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as response:
            raw = "".join(response.iter_text())
        assert ": keepalive" in raw
        assert "id:" not in raw and "retry:" not in raw
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        chunks = list(
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "y"}], stream=True)
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: y (I was given 1 message.)"
        )


def test_errors_are_raised_as_the_sdks_typed_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_id:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}], extra_headers={HEADER: "not valid!"}
        )
    assert bad_id.value.code == "invalid_session_id"
    with pytest.raises(openai.NotFoundError) as no_model:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert no_model.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as no_input:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            extra_headers={HEADER: "s-x"},
        )
    assert no_input.value.param == "messages"
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x" * (1100 * 1024)}])
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}], stream=True, n=3)


def test_a_chunked_body_over_the_limit_is_cut_off_with_a_413(server: LiveServer) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}]}'

    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    validate(response.json(), "ErrorResponse")


def test_a_client_that_disconnects_mid_stream_stores_nothing(store: DynamoDBSessionStore) -> None:
    """Documented behaviour: a turn whose client went away before the end is not kept,
    so the client's retry does not duplicate the question."""
    with serve(store, delay=0.1) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "one two three four five"}],
            stream=True,
            extra_headers={HEADER: "s-gone"},
        )
        for index, _chunk in enumerate(stream):
            if index == 2:
                break
        stream.close()
        time.sleep(1.5)  # longer than the rest of the answer would have taken
        state = asyncio.run(store.load(SessionKey(owner="open", session_id="s-gone"), 10))
        assert state.messages == []
        follow = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "retry"}], extra_headers={HEADER: "s-gone"}
        )
        assert follow.choices[0].message.content == "Echo: retry (I was given 1 message.)"
