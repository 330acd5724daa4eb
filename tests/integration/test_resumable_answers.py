"""Answers that survive a dropped connection (issue 13), as users see them: the official
`openai` client and plain HTTP against real uvicorn servers on DynamoDB Local.

Two servers share the table, each with its own event loop: a client that reconnects to
the other one reads the recorded events from the store, as a client reconnecting to
another Lambda container does. A third kind of server runs in an OS process of its
own, to be killed mid-answer (a worker that dies).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.schemas import validate
from tests.servers import LiveServer
from tests.servers_process import ServerProcess

HEADER = "X-Hermes-Session-Id"
RESUMABLE = {"X-Threadline-Resumable": "true"}
WORDS = " ".join(f"w{i}" for i in range(24))
FULL_REPLY = f"Echo: {WORDS} (I was given 1 message.)"


def serve(store: DynamoDBSessionStore, *, delay: float = 0.02, keys: tuple[str, ...] = ()) -> LiveServer:
    settings = Settings(sessions_table=store.table_name, api_keys=keys, stream_poll_ms=20, run_lease_seconds=3)
    app = create_app(ChatService(store, EchoProvider(delay_seconds=delay), settings), settings=settings)
    return LiveServer(app)


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


@pytest.fixture
def servers(store: DynamoDBSessionStore) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Where answers start, and another "container" where clients reconnect."""
    with serve(store) as first, serve(store) as second:
        yield first, second


def sdk(server: LiveServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def event_dicts(stream: Any) -> list[dict[str, Any]]:
    return [event.model_dump(mode="json", exclude_unset=True) for event in stream]


def check_sequence(events: list[dict[str, Any]], first: int) -> None:
    assert [event["sequence_number"] for event in events] == list(range(first, first + len(events)))
    for event in events:
        validate(event, "ResponseStreamEvent")


# -- Responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("kept", [1, 3, 12, None])
def test_a_stored_stream_goes_on_and_resumes_with_exactly_the_missed_events(
    servers: tuple[LiveServer, LiveServer], kept: int | None
) -> None:
    """Read `kept` events (None: all of them), drop the connection, reconnect to the other
    server with starting_after: the events after it, none twice, in order, then the end."""
    first, second = servers
    seen: list[dict[str, Any]] = []
    with sdk(first).responses.create(model="echo", input=WORDS, stream=True) as stream:
        for event in stream:
            seen.append(event.model_dump(mode="json", exclude_unset=True))
            if kept is not None and len(seen) == kept:
                break
    response_id = seen[0]["response"]["id"]
    last = seen[-1]["sequence_number"]
    rest = event_dicts(sdk(second).responses.retrieve(response_id, stream=True, starting_after=last))
    events = seen + rest
    check_sequence(events, 0)
    assert events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == FULL_REPLY
    assert sdk(second).responses.retrieve(response_id).output_text == FULL_REPLY
    if kept is None:
        assert rest == []
    # The whole stream again, from the start, equals what the two connections saw.
    assert event_dicts(sdk(second).responses.retrieve(response_id, stream=True)) == events


def test_a_background_response_is_queued_then_completed_and_streamable(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = servers
    raw = sdk(first).responses.with_raw_response.create(model="echo", input=WORDS, background=True)
    queued = raw.parse()
    validate(json.loads(raw.text), "Response")
    assert queued.status in ("queued", "in_progress") and queued.background is True
    assert queued.output == []
    # Followed from its first event, on the other server, while it runs.
    events = event_dicts(sdk(second).responses.retrieve(queued.id, stream=True))
    check_sequence(events, 0)
    assert events[-1]["type"] == "response.completed"
    done = sdk(second).responses.retrieve(queued.id)
    assert done.status == "completed" and done.output_text == FULL_REPLY and done.background is True
    # Its turn is in its session, and the chain goes on from it.
    follow_up = sdk(first).responses.create(model="echo", input="next", previous_response_id=queued.id)
    assert follow_up.output_text == "Echo: next (I was given 3 messages.)"
    session = raw.headers[HEADER]
    messages = httpx.get(f"{first.url}/v1/sessions/{session}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_a_background_request_retried_with_its_idempotency_key_is_queued_once(
    servers: tuple[LiveServer, LiveServer], local_table: tuple[Any, str]
) -> None:
    first, second = servers
    body = {"model": "echo", "input": WORDS, "background": True}
    once = httpx.post(f"{first.url}/v1/responses", json=body, headers={"Idempotency-Key": "bg-1"})
    again = httpx.post(f"{second.url}/v1/responses", json=body, headers={"Idempotency-Key": "bg-1"})
    assert once.status_code == again.status_code == 200
    assert once.content == again.content and once.headers[HEADER] == again.headers[HEADER]
    response_items = [i for i in table_items(*local_table) if i["sk"]["S"] == "RESPONSE"]
    assert [i["response_id"]["S"] for i in response_items] == [once.json()["id"]]


def test_two_followers_at_once_see_the_same_events(servers: tuple[LiveServer, LiveServer]) -> None:
    first, second = servers
    queued = sdk(first).responses.create(model="echo", input=WORDS, background=True)
    seen: dict[str, list[dict[str, Any]]] = {}

    def follow(name: str, server: LiveServer) -> None:
        seen[name] = event_dicts(sdk(server).responses.retrieve(queued.id, stream=True))

    threads = [threading.Thread(target=follow, args=(name, server)) for name, server in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen["a"] == seen["b"]
    check_sequence(seen["a"], 0)
    assert seen["a"][-1]["type"] == "response.completed"


def test_cancel_stops_a_background_response_while_a_follower_waits(
    store: DynamoDBSessionStore, local_table: tuple[Any, str]
) -> None:
    with serve(store, delay=0.2) as first, serve(store) as second:
        raw = sdk(first).responses.with_raw_response.create(model="echo", input=WORDS, background=True)
        queued = raw.parse()
        followed: list[dict[str, Any]] = []

        def follow() -> None:
            followed.extend(event_dicts(sdk(second).responses.retrieve(queued.id, stream=True)))

        follower = threading.Thread(target=follow)
        follower.start()
        time.sleep(1.0)  # some words are out, most are not
        cancelled = sdk(second).responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        follower.join(timeout=30)
        assert not follower.is_alive()
        check_sequence(followed, 0)
        assert followed[-1]["type"] == "response.failed"
        assert followed[-1]["response"]["status"] == "cancelled"
        deltas = [e for e in followed if e["type"] == "response.output_text.delta"]
        assert 0 < len(deltas) < len(WORDS.split())
        time.sleep(1.0)  # the worker notices at its next write and stops the model
        assert sdk(first).responses.retrieve(queued.id).status == "cancelled"
        # Nothing of it reached its session, and it is not billed further: no more events.
        session_items = [i for i in table_items(*local_table) if i["pk"]["S"] == f"SESSION#open#{raw.headers[HEADER]}"]
        assert session_items == []
        again = event_dicts(sdk(first).responses.retrieve(queued.id, stream=True))
        assert again == followed
        # Cancelling again says the same; a finished or plain response cannot be cancelled.
        assert sdk(first).responses.cancel(queued.id).status == "cancelled"
        plain = sdk(first).responses.create(model="echo", input="hi")
        with pytest.raises(openai.BadRequestError):
            sdk(first).responses.cancel(plain.id)


def test_a_streamed_background_response_is_cancelled_under_its_own_client(store: DynamoDBSessionStore) -> None:
    """`background` with `stream`: it runs where it was asked, streams to its client, and
    a cancel from another server ends that client's stream too, with what it was sent."""
    with serve(store, delay=0.2) as first, serve(store) as second:
        seen: list[dict[str, Any]] = []
        with sdk(first).responses.create(model="echo", input=WORDS, background=True, stream=True) as stream:
            for event in stream:
                seen.append(event.model_dump(mode="json", exclude_unset=True))
                if event.type == "response.output_text.delta" and "w1" in event.delta:
                    assert sdk(second).responses.cancel(seen[0]["response"]["id"]).status == "cancelled"
        check_sequence(seen, 0)
        assert seen[0]["response"]["background"] is True
        assert seen[-1]["type"] == "response.failed" and seen[-1]["response"]["status"] == "cancelled"
        sent = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
        assert "w1" in sent and not sent.endswith("message.)")
        kept = sdk(second).responses.retrieve(seen[0]["response"]["id"])
        assert kept.status == "cancelled" and kept.output_text == sent


def test_a_response_whose_worker_dies_ends_failed_once_its_lease_lapses(
    store: DynamoDBSessionStore, dynamodb_local: str
) -> None:
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local,
        "SESSIONS_TABLE": store.table_name,
        "ECHO_DELAY_MS": "200",
        "RUN_LEASE_SECONDS": "3",
        "BACKGROUND_DISPATCH": "task",
    }
    with ServerProcess(env) as worker, serve(store) as reader:
        queued = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="x", max_retries=0).responses.create(
            model="echo", input=WORDS, background=True
        )
        deadline = time.monotonic() + 20
        while sdk(reader).responses.retrieve(queued.id).status != "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        worker.kill()
        killed_at = time.monotonic()
        events = event_dicts(sdk(reader).responses.retrieve(queued.id, stream=True))
        ended_after = time.monotonic() - killed_at
        failed = sdk(reader).responses.retrieve(queued.id)
    assert ended_after < 3 + 2, ended_after  # the lease, and a poll or two
    check_sequence(events, 0)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert failed.status == "failed" and failed.error is not None


def test_every_new_route_is_scoped_to_its_owner(store: DynamoDBSessionStore) -> None:
    with serve(store, keys=("key-alice", "key-bob")) as live:
        alice, bob = sdk(live, "key-alice"), sdk(live, "key-bob")
        mine = alice.responses.create(model="echo", input=WORDS, background=True)
        with pytest.raises(openai.NotFoundError):
            bob.responses.cancel(mine.id)
        with pytest.raises(openai.NotFoundError):
            list(bob.responses.retrieve(mine.id, stream=True))
        with httpx.stream(
            "POST",
            f"{live.url}/v1/chat/completions",
            json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={**RESUMABLE, "Authorization": "Bearer key-alice"},
        ) as reply:
            session = reply.headers[HEADER]
            reply.read()
        bob_auth = {"Authorization": "Bearer key-bob"}
        assert httpx.get(f"{live.url}/v1/sessions/{session}/stream", headers=bob_auth).status_code == 404
        assert httpx.post(f"{live.url}/v1/sessions/{session}/stream/cancel", headers=bob_auth).status_code == 404
        alice_auth = {"Authorization": "Bearer key-alice"}
        assert httpx.get(f"{live.url}/v1/sessions/{session}/stream", headers=alice_auth).status_code == 200
        assert alice.responses.retrieve(mine.id).id == mine.id


# -- Chat completions --------------------------------------------------------------------


def chat_stream(server: LiveServer, *, keep: int | None, resumable: bool = True) -> tuple[str, list[str]]:
    """Start a streamed chat answer; keep `keep` data frames (None: all); the session id."""
    frames: list[str] = []
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]},
        headers=RESUMABLE if resumable else {},
    ) as reply:
        session = reply.headers[HEADER]
        for line in reply.iter_lines():
            if line.startswith("data: "):
                frames.append(line.removeprefix("data: "))
                if keep is not None and len(frames) == keep:
                    break
    return session, frames


def resume(server: LiveServer, session: str, after: int) -> list[str]:
    with httpx.stream("GET", f"{server.url}/v1/sessions/{session}/stream", params={"after": after}) as reply:
        assert reply.status_code == 200, reply.read()
        return [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]


def reply_text(frames: list[str]) -> str:
    text = ""
    for frame in frames:
        if frame == "[DONE]":
            continue
        choices = json.loads(frame)["choices"]
        text += (choices[0]["delta"].get("content") or "") if choices else ""
    return text


@pytest.mark.parametrize("kept", [0, 1, 7, None])
def test_a_resumable_chat_answer_resumes_by_session_with_no_chunk_twice(
    servers: tuple[LiveServer, LiveServer], kept: int | None
) -> None:
    first, second = servers
    session, seen = chat_stream(first, keep=kept)
    counted = len([frame for frame in seen if frame != "[DONE]"])
    rest = resume(second, session, after=counted)
    frames = [frame for frame in seen if frame != "[DONE]"] + rest
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    assert reply_text(frames) == FULL_REPLY
    ids = {json.loads(frame)["id"] for frame in frames if frame != "[DONE]"}
    assert len(ids) == 1
    for frame in frames[:-1]:
        validate(json.loads(frame), "CreateChatCompletionStreamResponse")
    assert resume(second, session, after=0) == frames  # the whole answer, from the start
    stored = httpx.get(f"{second.url}/v1/sessions/{session}/messages").json()["data"]
    assert [m["content"] for m in stored] == [WORDS, FULL_REPLY]


def test_two_chat_followers_and_a_cancel_while_they_wait(
    store: DynamoDBSessionStore, local_table: tuple[Any, str]
) -> None:
    with serve(store, delay=0.2) as first, serve(store) as second:
        session, seen = chat_stream(first, keep=3)
        followed: dict[str, list[str]] = {}

        def follow(name: str, server: LiveServer) -> None:
            followed[name] = resume(server, session, after=0)

        threads = [threading.Thread(target=follow, args=(n, s)) for n, s in (("a", first), ("b", second))]
        for thread in threads:
            thread.start()
        time.sleep(0.8)
        cancelled = httpx.post(f"{second.url}/v1/sessions/{session}/stream/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        for thread in threads:
            thread.join(timeout=30)
        assert followed["a"] == followed["b"]
        assert followed["a"][-1] == "[DONE]"
        assert followed["a"][:3] == seen
        assert 0 < len(reply_text(followed["a"])) < len(FULL_REPLY)
        time.sleep(1.0)
        # The model stopped and nothing was stored: the session has no messages.
        assert httpx.get(f"{first.url}/v1/sessions/{session}/messages").status_code == 404
        assert resume(first, session, after=0) == followed["a"]


def test_a_chat_answer_whose_worker_dies_ends_with_an_error_frame(
    store: DynamoDBSessionStore, dynamodb_local: str
) -> None:
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local,
        "SESSIONS_TABLE": store.table_name,
        "ECHO_DELAY_MS": "200",
        "RUN_LEASE_SECONDS": "3",
    }
    with ServerProcess(env) as worker, serve(store) as reader:
        seen: list[str] = []
        with httpx.stream(
            "POST",
            f"{worker.url}/v1/chat/completions",
            json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]},
            headers=RESUMABLE,
        ) as reply:
            session = reply.headers[HEADER]
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    seen.append(line.removeprefix("data: "))
                if "w5" in line:
                    break
            worker.kill()
        killed_at = time.monotonic()
        ahead = resume(reader, session, after=len(seen))
        ended_after = time.monotonic() - killed_at
        recorded = resume(reader, session, after=0)
    assert ended_after < 3 + 2, ended_after
    # What the worker recorded before it died (its last batch may be lost), then the end.
    assert json.loads(recorded[-1])["error"]["code"] == "worker_stopped"
    assert recorded[:-1] == seen[: len(recorded) - 1]
    assert "w2" in reply_text(recorded[:-1])
    # A client that saw more than was recorded still learns how it ended.
    assert ahead == recorded[-1:]


def test_a_plain_chat_stream_is_not_resumable(servers: tuple[LiveServer, LiveServer]) -> None:
    first, _ = servers
    session, frames = chat_stream(first, keep=None, resumable=False)
    assert frames[-1] == "[DONE]"
    missing = httpx.get(f"{first.url}/v1/sessions/{session}/stream")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = httpx.get(f"{first.url}/v1/sessions/{session}/stream", params={"after": "-1"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
