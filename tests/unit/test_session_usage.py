"""Usage per session (issue 12.4): each stored turn keeps its token usage, and the session
head keeps running totals, moved by the turn's own transaction; `GET /v1/sessions` shows them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.errors import ApiError
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta
from core.providers.echo import EchoProvider, message_text
from core.settings import Settings
from handler.app import create_app
from tests.reliability.turn_worker import RecordingStore

HEADER = "X-Hermes-Session-Id"


class CountingClient:
    """The boto3 client, counting every DynamoDB call made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or not callable(attribute) or name in {"meta", "exceptions"}:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


class RefusingEcho(EchoProvider):
    """The echo model, except that a message saying `refuse` fails before any token, and
    one saying `silent` is answered by an upstream that reports no usage."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        said = message_text(request.messages[-1])
        if "refuse" in said:
            raise ApiError(429, "The model provider is rate limiting requests.", code="rate_limit_exceeded")
        if "silent" in said:
            yield TextDelta("ok")
            yield Finish("stop", None)
            return
        async for event in super().stream(request):
            yield event


@pytest.fixture
def counting(moto_table: tuple[Any, str]) -> CountingClient:
    return CountingClient(moto_table[0])


@pytest.fixture
def store(counting: CountingClient, moto_table: tuple[Any, str]) -> RecordingStore:
    return RecordingStore(moto_table[1], ttl_days=30, client=counting)


@pytest.fixture
async def api(store: RecordingStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(sessions_table=store.table_name)
    app = create_app(ChatService(store, RefusingEcho(), settings), settings=settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


async def chat(api: httpx.AsyncClient, text: str, session: str, *, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": "echo", "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return await api.post("/v1/chat/completions", json=body, headers={HEADER: session})


def usage_seen(response: httpx.Response) -> dict[str, int]:
    """The usage the client was told, from a buffered body or a stream's usage chunk."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        usage: dict[str, int] = json.loads(frames[-1])["usage"]
        return usage
    body: dict[str, Any] = response.json()
    return dict(body["usage"])


async def listed(api: httpx.AsyncClient, session: str) -> dict[str, Any]:
    sessions = (await api.get("/v1/sessions")).json()["data"]
    [found] = [s for s in sessions if s["id"] == session]
    return dict(found)


async def test_the_listing_shows_the_sum_of_every_turns_usage(api: httpx.AsyncClient) -> None:
    first = usage_seen(await chat(api, "hello there", "s-usage"))
    # The echo model counts words: 2 words in, and its reply has 8.
    assert first == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}
    seen = [first]
    seen.append(usage_seen(await chat(api, "and a streamed one", "s-usage", stream=True)))
    for i in range(3):
        seen.append(usage_seen(await chat(api, f"turn number {i}", "s-usage")))
    entry = await listed(api, "s-usage")
    assert entry["usage"] == {
        "input_tokens": sum(u["prompt_tokens"] for u in seen),
        "output_tokens": sum(u["completion_tokens"] for u in seen),
        "turns": 5,
    }
    assert entry["message_count"] == 10


async def test_each_reply_keeps_its_own_turns_usage(api: httpx.AsyncClient) -> None:
    told = [usage_seen(await chat(api, text, "s-per-turn")) for text in ("one", "two words", "three more words")]
    messages = (await api.get("/v1/sessions/s-per-turn/messages")).json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert all("usage" not in m for m in messages[0::2])  # a turn's usage sits on its reply
    assert [m["usage"] for m in messages[1::2]] == [
        {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]} for u in told
    ]


async def test_a_continued_turn_still_costs_one_query_and_one_transaction(
    api: httpx.AsyncClient, counting: CountingClient
) -> None:
    usage_seen(await chat(api, "start", "s-cost"))
    before = (await listed(api, "s-cost"))["usage"]
    counting.calls.clear()
    told = usage_seen(await chat(api, "continue", "s-cost"))
    # The totals moved with the turn's own write: no extra read or write for them.
    assert counting.calls == Counter({"query": 1, "transact_write_items": 1})
    assert (await listed(api, "s-cost"))["usage"] == {
        "input_tokens": before["input_tokens"] + told["prompt_tokens"],
        "output_tokens": before["output_tokens"] + told["completion_tokens"],
        "turns": 2,
    }


async def test_a_failed_turn_adds_nothing(api: httpx.AsyncClient) -> None:
    usage_seen(await chat(api, "fine", "s-failed"))
    before = await listed(api, "s-failed")
    refused = await chat(api, "please refuse", "s-failed")
    assert refused.status_code == 429
    streamed = await chat(api, "refuse this too", "s-failed", stream=True)
    assert streamed.status_code == 429
    after = await listed(api, "s-failed")
    assert after["usage"] == before["usage"] and after["usage"]["turns"] == 1
    assert after["message_count"] == 2


async def test_concurrent_turns_on_one_session_add_up(api: httpx.AsyncClient, store: RecordingStore) -> None:
    """Every turn reads the session before any of them is stored, so all but one lose the
    race at least once and are retried behind the winners: each adds its usage once."""
    usage_seen(await chat(api, "opening", "s-race"))
    start = (await listed(api, "s-race"))["usage"]
    told = [usage_seen(r) for r in await asyncio.gather(*(chat(api, f"racer {i}", "s-race") for i in range(10)))]
    assert sum(store.conflicts) >= 9  # the races were lost and retried
    entry = await listed(api, "s-race")
    assert entry["message_count"] == 22
    assert entry["usage"] == {
        "input_tokens": start["input_tokens"] + sum(u["prompt_tokens"] for u in told),
        "output_tokens": start["output_tokens"] + sum(u["completion_tokens"] for u in told),
        "turns": 11,
    }


async def test_responses_turns_count_and_added_items_do_not(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/conversations", json={"items": [{"role": "user", "content": "noted, no model"}]})
    assert created.status_code == 200, created.text
    conversation = created.json()["id"]
    assert (await listed(api, conversation))["usage"] == {"input_tokens": 0, "output_tokens": 0, "turns": 0}
    first = await api.post("/v1/responses", json={"model": "echo", "input": "hi", "conversation": conversation})
    assert first.status_code == 200, first.text
    second = await api.post(
        "/v1/responses", json={"model": "echo", "input": "again", "previous_response_id": first.json()["id"]}
    )
    assert second.status_code == 200, second.text
    told = [first.json()["usage"], second.json()["usage"]]
    assert (await listed(api, conversation))["usage"] == {
        "input_tokens": sum(u["input_tokens"] for u in told),
        "output_tokens": sum(u["output_tokens"] for u in told),
        "turns": 2,
    }


async def test_a_turn_whose_provider_reports_no_usage_counts_as_a_turn_of_no_tokens(api: httpx.AsyncClient) -> None:
    usage_seen(await chat(api, "hello", "s-silent"))
    before = (await listed(api, "s-silent"))["usage"]
    assert usage_seen(await chat(api, "be silent", "s-silent"))["total_tokens"] == 0
    after = (await listed(api, "s-silent"))["usage"]
    assert after == {**before, "turns": 2}
    messages = (await api.get("/v1/sessions/s-silent/messages")).json()["data"]
    assert messages[-1]["usage"] == {"input_tokens": 0, "output_tokens": 0}
