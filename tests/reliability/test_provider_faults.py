"""Upstream model faults: 429, 5xx, timeouts, dropped connections, garbage, mid-stream or not.

A real uvicorn server on DynamoDB Local with the `openai` provider (the official SDK,
its own retries off) in front of `FakeUpstream`, a scriptable OpenAI-compatible server.
For every fault, streamed and buffered, the client gets the contract's answer:

- before the first token: a proper HTTP status in the error shape (429 stays 429;
  5xx, timeouts and rejected server credentials are 502), with the session header;
- after the stream began: the content so far, then one `data: {"error": ...}` frame
  and the end of the stream (no finish chunk, no `[DONE]`);
- never the upstream's own text for a 5xx, its address, or exception text;

and nothing of the failed turn is stored: the session holds exactly the turns before
it, and the next turn sends the model exactly that history plus its new input.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from core.chat import ChatService
from core.providers.openai_compat import OpenAIProvider
from core.settings import Settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.fakes.openai_upstream import FakeUpstream, Reply, drop, error, raw, stall, text
from tests.reliability.contract import assert_contract_error, sse_frames
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
UPSTREAM_KEY = "sk-upstream-secret-0123"
PROVIDER_TIMEOUT = 1.5
LEAK = "upstream internal detail 10.1.2.3"


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def server(upstream: FakeUpstream, store: DynamoDBSessionStore) -> Iterator[LiveServer]:
    provider = OpenAIProvider(
        base_url=upstream.base_url, api_key=UPSTREAM_KEY, timeout_seconds=PROVIDER_TIMEOUT, max_retries=0
    )
    settings = Settings(sessions_table=store.table_name, model_provider="openai", models={"smart": "up-1"})
    with LiveServer(create_app(ChatService(store, provider, settings))) as live:
        yield live


def post(server: LiveServer, content: str, session: str, *, stream: bool) -> httpx.Response:
    body = {"model": "smart", "stream": stream, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={HEADER: session}, timeout=30)


def stored(store: DynamoDBSessionStore, session: str) -> list[dict[str, Any]]:
    return asyncio.run(store.load(SessionKey(owner="open", session_id=session), 100)).messages


def secrets(upstream: FakeUpstream) -> tuple[str, ...]:
    return (LEAK, UPSTREAM_KEY, upstream.url, f"127.0.0.1:{upstream.port}")


BEFORE_FIRST_TOKEN: list[tuple[str, Reply, int, str]] = [
    ("429", error(429, LEAK), 429, "rate_limit_exceeded"),
    ("500", error(500, LEAK), 502, "upstream_error"),
    ("503", error(503, LEAK), 502, "upstream_error"),
    ("401-server-credentials", error(401, LEAK), 502, "upstream_error"),
    ("timeout-before-headers", stall(10.0), 502, "upstream_error"),
]
MID_STREAM: list[tuple[str, Reply]] = [
    ("connection-dropped", drop(("Half an", " answer"))),
    ("timeout-mid-stream", stall(10.0, after=("Half an", " answer"))),
    ("garbage-chunk", raw({"choices": [{"index": 0, "delta": {"content": "Half an"}}]}, "{not json", done=False)),
]


def first_turn(server: LiveServer, upstream: FakeUpstream, session: str) -> None:
    upstream.push(text("Answer one."))
    assert post(server, "question one", session, stream=False).status_code == 200


def assert_untouched_and_continues(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, session: str
) -> None:
    before = [
        {"role": "user", "content": "question one"},
        {"role": "assistant", "content": "Answer one."},
    ]
    assert stored(store, session) == before  # nothing of the failed turn
    upstream.push(text("Answer three."))
    response = post(server, "question three", session, stream=True)
    assert response.status_code == 200 and sse_frames(response.text)[-1] == "[DONE]"
    assert upstream.last.body["messages"] == [*before, {"role": "user", "content": "question three"}]
    assert stored(store, session) == [
        *before,
        {"role": "user", "content": "question three"},
        {"role": "assistant", "content": "Answer three."},
    ]


@pytest.mark.parametrize(
    ("name", "reply", "status", "code"), BEFORE_FIRST_TOKEN, ids=[s[0] for s in BEFORE_FIRST_TOKEN]
)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_failure_before_the_first_token_is_a_proper_status_and_stores_nothing(
    server: LiveServer,
    upstream: FakeUpstream,
    store: DynamoDBSessionStore,
    name: str,
    reply: Reply,
    status: int,
    code: str,
    stream: bool,
) -> None:
    session = f"s-{name}-{stream}"
    first_turn(server, upstream, session)
    upstream.push(reply)
    response = post(server, "question two", session, stream=stream)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers[HEADER] == session
    assert_contract_error(status, response.content, code=code, secrets=secrets(upstream))
    assert len(upstream.chat_requests) == 2  # max_retries=0: the fault was not retried behind our back
    assert_untouched_and_continues(server, upstream, store, session)


@pytest.mark.parametrize(("name", "reply"), MID_STREAM, ids=[s[0] for s in MID_STREAM])
def test_a_failure_mid_stream_ends_the_stream_with_an_error_frame_and_stores_nothing(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, name: str, reply: Reply
) -> None:
    session = f"s-mid-{name}"
    first_turn(server, upstream, session)
    upstream.push(reply)
    response = post(server, "question two", session, stream=True)
    assert response.status_code == 200 and response.headers[HEADER] == session
    frames = sse_frames(response.text)
    assert "[DONE]" not in frames
    *chunks, last = (json.loads(frame) for frame in frames)
    assert_contract_error(502, last, code="upstream_error", secrets=secrets(upstream))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).startswith("Half an")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert_untouched_and_continues(server, upstream, store, session)


@pytest.mark.parametrize(("name", "reply"), MID_STREAM, ids=[s[0] for s in MID_STREAM])
def test_a_failure_mid_answer_of_a_buffered_request_is_a_502_and_stores_nothing(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, name: str, reply: Reply
) -> None:
    session = f"s-buffered-{name}"
    first_turn(server, upstream, session)
    upstream.push(reply)
    response = post(server, "question two", session, stream=False)
    assert response.status_code == 502, response.text
    assert response.headers[HEADER] == session
    assert_contract_error(502, response.content, code="upstream_error", secrets=secrets(upstream))
    assert_untouched_and_continues(server, upstream, store, session)


def test_the_official_sdk_raises_its_typed_errors_for_each_fault(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore
) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    first_turn(server, upstream, "s-sdk")
    messages: Any = [{"role": "user", "content": "question two"}]
    upstream.push(error(429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="smart", messages=messages, extra_headers={HEADER: "s-sdk"})
    upstream.push(error(500))
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="smart", messages=messages, stream=True, extra_headers={HEADER: "s-sdk"})
    assert failed.value.status_code == 502
    upstream.push(drop(("Half an", " answer")))
    seen: list[str] = []
    with pytest.raises(openai.APIError) as mid_stream:
        for chunk in client.chat.completions.create(
            model="smart", messages=messages, stream=True, extra_headers={HEADER: "s-sdk"}
        ):
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Half an answer"
    assert "connection to the model provider was lost" in mid_stream.value.message
    assert_untouched_and_continues(server, upstream, store, "s-sdk")
