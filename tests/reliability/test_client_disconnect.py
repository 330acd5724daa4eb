"""A client that goes away mid-stream: the model call is cancelled and the turn is not stored.

README "Sessions": "A client that disconnects mid-stream: the model call is cancelled
and the turn is **not** stored (the client never saw a complete answer; its retry
starts clean)." Shown end to end: the official SDK or a raw HTTP client -> a real
uvicorn server on DynamoDB Local -> the `openai` provider -> `FakeUpstream`, which
records `disconnected=True` when its own client (our server) hung up before the end.
The upstream is slow (or silent) enough that only a cancellation, never the end of
its answer, can finish its request within the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
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
from tests.fakes.openai_upstream import FakeUpstream, RecordedRequest, stall, text
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
LONG_ANSWER = " ".join(f"word{i}" for i in range(60))  # 60 chunks, 0.1 s apart: 6 s in all
CANCEL_WAIT = 3.0
"""How long the upstream request may take to end after the client left (it would run 5-10 s)."""


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def server(upstream: FakeUpstream, store: DynamoDBSessionStore) -> Iterator[LiveServer]:
    # Timeouts far above the waits below: only a cancellation can end an upstream call early.
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-up", timeout_seconds=60, max_retries=0)
    settings = Settings(sessions_table=store.table_name, model_provider="openai", models={"smart": "up-1"})
    with LiveServer(create_app(ChatService(store, provider, settings))) as live:  # keepalive: the default 15 s
        yield live


def stored(store: DynamoDBSessionStore, session: str) -> list[dict[str, Any]]:
    return asyncio.run(store.load(SessionKey(owner="open", session_id=session), 100)).messages


def sdk(server: LiveServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, **options)


def seed(server: LiveServer, upstream: FakeUpstream, session: str) -> list[dict[str, Any]]:
    upstream.push(text("Answer one."))
    sdk(server).chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "one"}], extra_headers={HEADER: session}
    )
    return [{"role": "user", "content": "one"}, {"role": "assistant", "content": "Answer one."}]


def assert_cancelled(record: RecordedRequest, left_at: float) -> float:
    """The upstream request ended because our server hung up; how long after the client left."""
    record.wait_done(timeout=CANCEL_WAIT)
    assert record.disconnected and not record.completed
    assert record.finished_at is not None
    return record.finished_at - left_at


def assert_retry_starts_clean(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, session: str, before: list[dict[str, Any]]
) -> None:
    assert stored(store, session) == before  # the abandoned turn was not kept
    upstream.push(text("Answer two."))
    sdk(server).chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "two"}], extra_headers={HEADER: session}
    )
    assert upstream.last.body["messages"] == [*before, {"role": "user", "content": "two"}]
    assert stored(store, session) == [
        *before,
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "Answer two."},
    ]


def test_an_sdk_client_that_closes_its_stream_cancels_the_model_call(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, report: Callable[[str, str], None]
) -> None:
    before = seed(server, upstream, "s-sdk-gone")
    upstream.push(text(LONG_ANSWER, gap=0.1))
    stream = sdk(server).chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "tell me everything"}],
        stream=True,
        extra_headers={HEADER: "s-sdk-gone"},
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if received.count("word") >= 3:
            break
    left_at = time.monotonic()
    stream.close()
    record = upstream.last
    delay = assert_cancelled(record, left_at)
    assert len(record.chunk_times) < 60
    report("cancel-sdk", f"SDK stream closed mid-answer: upstream call cancelled {delay * 1000:.0f} ms later")
    assert_retry_starts_clean(server, upstream, store, "s-sdk-gone", before)


def test_a_client_that_leaves_while_the_model_is_silent_cancels_it_at_once(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore, report: Callable[[str, str], None]
) -> None:
    """Nothing is being written to the client (the model thinks for 10 s, the keepalive
    is 15 s away): the server still notices the disconnect and cancels the model call."""
    before = seed(server, upstream, "s-quiet-gone")
    upstream.push(stall(10.0, after=("Let me think",)))
    body = {"model": "smart", "stream": True, "messages": [{"role": "user", "content": "hard question"}]}
    left_at: float | None = None
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers={HEADER: "s-quiet-gone"}, timeout=30
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if "Let me think" in line:
                left_at = time.monotonic()  # from here on the client closes the connection
                break
    assert left_at is not None, "the model's first words never reached the client"
    delay = assert_cancelled(upstream.last, left_at)
    report(
        "cancel-quiet", f"client left while the model was silent: upstream call cancelled {delay * 1000:.0f} ms later"
    )
    assert_retry_starts_clean(server, upstream, store, "s-quiet-gone", before)


def test_a_client_that_leaves_before_the_first_token_cancels_the_model_call(
    server: LiveServer, upstream: FakeUpstream, store: DynamoDBSessionStore
) -> None:
    before = seed(server, upstream, "s-early-gone")
    upstream.push(stall(5.0))
    with pytest.raises(openai.APITimeoutError):  # the client gives up waiting for the first byte
        sdk(server, timeout=0.5).chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "slow question"}],
            stream=True,
            extra_headers={HEADER: "s-early-gone"},
        )
    left_at = time.monotonic()
    try:
        assert_cancelled(upstream.last, left_at)
    finally:
        upstream.last.wait_done(timeout=15)  # let the stall end either way before the retry
    assert_retry_starts_clean(server, upstream, store, "s-early-gone", before)
