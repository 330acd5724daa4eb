"""Compaction (issue 12): what a user sees of it through the API, with the echo model.

The in-process ASGI transport returns a response only once the app is done, work after
the response included, so every test here sees the compaction a turn started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.base import ModelRequest, ProviderEvent
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from core.summary_prompt import is_summary_request
from handler.app import create_app

HEADER = "X-Hermes-Session-Id"
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
WINDOW = 4
THRESHOLD = 4


class Recorder:
    """The echo model, recording what each call was given (and failing summaries on demand)."""

    name = "echo"

    def __init__(self, events: list[str] | None = None) -> None:
        self.echo = EchoProvider()
        self.turns: list[list[dict[str, Any]]] = []
        self.summaries: list[list[dict[str, Any]]] = []
        self.fail_summaries = 0
        self.events = events if events is not None else []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        if is_summary_request(request.messages):
            self.events.append("summary requested")
            self.summaries.append(request.messages)
            if self.fail_summaries:
                self.fail_summaries -= 1
                raise RuntimeError("the model is down")
        else:
            self.turns.append(request.messages)
        async for event in self.echo.stream(request):
            yield event


def build(moto_table: tuple[Any, str], recorder: Recorder, **overrides: Any) -> Any:
    client, name = moto_table
    settings = Settings(
        sessions_table=name,
        api_keys=("alice:alice-key", "bob:bob-key"),
        history_window=WINDOW,
        compaction_threshold=THRESHOLD,
        **overrides,
    )
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    return create_app(ChatService(store, recorder, settings), settings=settings)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def api(moto_table: tuple[Any, str], recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build(moto_table, recorder))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def say(api: httpx.AsyncClient, text: str, session: str, who: dict[str, str] = ALICE) -> httpx.Response:
    response = await api.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": text}]},
        headers={**who, HEADER: session},
    )
    assert response.status_code == 200, response.text
    return response


async def listing(api: httpx.AsyncClient, session: str) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 7, **({"after": after} if after else {})}
        page = (await api.get(f"/v1/sessions/{session}/messages", params=params, headers=ALICE)).json()
        shown += page["data"]
        if not page["has_more"]:
            return shown
        after = page["next_cursor"]


def summaries_in(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "system" and m["content"].startswith("Summary of the")]


async def test_the_model_input_stays_bounded_and_every_message_stays_listed(
    api: httpx.AsyncClient, recorder: Recorder
) -> None:
    for turn in range(40):
        await say(api, f"turn {turn} says something about topic {turn}", "long")
    # system summary + window + the new input, however long the session grew
    assert max(len(messages) for messages in recorder.turns) <= 1 + WINDOW + 1
    assert len(recorder.turns[-1]) == 1 + WINDOW + 1
    # the id never changed, and every raw message is still there, in order
    shown = await listing(api, "long")
    messages = [m for m in shown if m["object"] == "session.message"]
    assert [m["seq"] for m in messages] == list(range(80))
    summaries = [m for m in shown if m["object"] == "session.summary"]
    assert summaries, "a summary is listed with the messages"
    for summary in summaries:
        covers = summary["covers"]
        assert covers["first_seq"] == 0 and covers["last_seq"] < 80 - WINDOW
        position = shown.index(summary)
        assert shown[position - 1]["seq"] == covers["last_seq"]  # right after the last message it covers
    # each summary builds on the previous one: the model is given the previous summary
    # and only the messages since, never the whole session
    assert all(len(s[1]["content"].splitlines()) < 2 * (THRESHOLD + WINDOW) + 6 for s in recorder.summaries)


async def test_a_fact_from_the_first_turn_reaches_a_much_later_turn(api: httpx.AsyncClient, recorder: Recorder) -> None:
    await say(api, "Zorblax is my cat's name, remember it.", "fact")
    for turn in range(60):
        await say(api, f"filler turn {turn} about nothing in particular", "fact")
    await say(api, "What is my cat called?", "fact")
    latest = recorder.turns[-1]
    window_text = " ".join(str(m["content"]) for m in latest[-(WINDOW + 1) :])
    assert "Zorblax" not in window_text  # long gone from the window...
    (summary,) = summaries_in(latest)
    assert "Zorblax is my cat's name" in summary  # ...and still seen, through the summaries
    assert summary.startswith("Summary of the earlier conversation (messages 0-")


async def test_a_failing_summary_does_not_fail_the_turn_and_is_retried(
    api: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail_summaries = 1
    for turn in range(5):  # 10 messages: 6 outside a window of 4, past the threshold
        await say(api, f"turn {turn}", "flaky")
    assert len(recorder.summaries) == 1  # tried once, failed; the turn was answered anyway
    assert not [m for m in await listing(api, "flaky") if m["object"] == "session.summary"]
    await say(api, "turn 5", "flaky")
    assert len(recorder.summaries) == 2  # the next turn retried it
    (summary,) = [m for m in await listing(api, "flaky") if m["object"] == "session.summary"]
    assert summary["covers"] == {"first_seq": 0, "last_seq": 12 - WINDOW - 1}


async def test_compaction_off_keeps_the_plain_window(moto_table: tuple[Any, str], recorder: Recorder) -> None:
    transport = httpx.ASGITransport(app=build(moto_table, recorder, compaction=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        for turn in range(20):
            await say(api, f"turn {turn}", "plain")
        assert recorder.summaries == []
        assert summaries_in(recorder.turns[-1]) == []
        assert len(recorder.turns[-1]) == WINDOW + 1
        refused = await api.post("/v1/sessions/plain/compact", headers=ALICE)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "compaction_disabled"


async def test_the_compact_endpoint_summarises_now_and_says_what(api: httpx.AsyncClient, recorder: Recorder) -> None:
    for turn in range(4):  # 8 messages: 4 outside the window, not past the threshold
        await say(api, f"point {turn} matters", "now")
    assert recorder.summaries == []
    done = await api.post("/v1/sessions/now/compact", headers=ALICE)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["object"] == "session.compaction" and body["id"] == "now"
    assert body["compacted"] is True and body["summarised_messages"] == 4
    assert body["summary"]["covers"] == {"first_seq": 0, "last_seq": 3}
    assert body["summary"]["content"].startswith("Summary of messages 0-3: point 0 matters")
    again = (await api.post("/v1/sessions/now/compact", headers=ALICE)).json()
    assert again["compacted"] is False and again["summarised_messages"] == 0
    assert again["summary"]["covers"] == {"first_seq": 0, "last_seq": 3}
    await say(api, "and now?", "now")
    assert summaries_in(recorder.turns[-1]) == [
        "Summary of the earlier conversation (messages 0-3; the most recent messages follow):\n"
        + body["summary"]["content"]
    ]


async def test_the_compact_endpoint_is_the_owners_only(api: httpx.AsyncClient, recorder: Recorder) -> None:
    for turn in range(4):
        await say(api, f"private {turn}", "mine")
    for who in (BOB, {"Authorization": "Bearer nobody"}):
        refused = await api.post("/v1/sessions/mine/compact", headers=who)
        assert refused.status_code in (401, 404)
    assert (await api.post("/v1/sessions/mine/compact", headers=BOB)).json()["error"]["param"] == "session_id"
    assert (await api.post("/v1/sessions/nothing-here/compact", headers=ALICE)).status_code == 404
    assert recorder.summaries == []


async def test_the_first_token_of_the_triggering_turn_is_not_delayed(moto_table: tuple[Any, str]) -> None:
    events: list[str] = []
    recorder = Recorder(events)
    app = build(moto_table, recorder)

    async def recording_app(scope: Any, receive: Any, send: Any) -> None:
        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and b'"content":"Echo:' in message.get("body", b""):
                events.append("first token sent")
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                events.append("response ended")
            await send(message)

        await app(scope, receive, recording_send)

    transport = httpx.ASGITransport(app=recording_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        for turn in range(5):  # the fifth turn leaves 6 messages outside the window: past the threshold
            body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": f"turn {turn}"}]}
            response = await api.post("/v1/chat/completions", json=body, headers={**ALICE, HEADER: "order"})
            assert response.status_code == 200 and "[DONE]" in response.text
    # the last turn made a compaction due: it ran after that turn's answer had ended
    assert events[-3:] == ["first token sent", "response ended", "summary requested"]
    assert events.count("summary requested") == 1


async def test_responses_compact_is_refused_plainly(api: httpx.AsyncClient) -> None:
    refused = await api.post("/v1/responses/compact", json={"model": "echo", "input": "hi"}, headers=ALICE)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "unsupported_endpoint" and "/v1/sessions/{id}/compact" in error["message"]


async def test_a_responses_chain_sees_the_summary(api: httpx.AsyncClient, recorder: Recorder) -> None:
    previous: str | None = None
    for turn in range(12):
        body: dict[str, Any] = {"model": "echo", "input": f"Quokka fact {turn}" if turn == 0 else f"step {turn}"}
        if previous:
            body["previous_response_id"] = previous
        response = await api.post("/v1/responses", json=body, headers=ALICE)
        assert response.status_code == 200, response.text
        previous = response.json()["id"]
    (summary,) = summaries_in(recorder.turns[-1])
    assert "Quokka fact 0" in summary
