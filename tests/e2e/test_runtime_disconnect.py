"""A client that leaves mid-stream, seen through the streaming runtime: the model call is
cancelled, the turn is not stored, and the runtime goes on to the next invocation.

README "Sessions" promises this; `tests/reliability/test_client_disconnect.py` shows it
under uvicorn, where the server sees the client's socket close. Here the runtime runs as
Lambda starts it (`exec-wrapper`, its own process) against `FakeRuntimeAPI`, which cuts
the streamed response the way a Runtime API drops a stream nobody reads any more: it
closes (or resets) the response connection after some of the body arrived, without an
answer. The model is the `openai` provider against `FakeUpstream`, slow or silent enough
that only a cancellation (never the end of its answer) ends its request within the wait;
the store is DynamoDB Local, read back here through a client of the test's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.auth import principal_id
from tests.e2e.events import rest_event
from tests.e2e.fake_runtime_api import FakeRuntimeAPI, Invocation
from tests.e2e.runtime_process import RuntimeProcess
from tests.fakes.openai_upstream import FakeUpstream, RecordedRequest, stall, text

pytestmark = pytest.mark.integration

KEY = "e2e-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SESSION = "x-hermes-session-id"
LONG_ANSWER = " ".join(f"word{i}" for i in range(60))  # 60 chunks, 0.1 s apart: 6 s in all
CANCEL_WAIT = 3.0
"""How long the upstream request may take to end after the cut (it would run 6-10 s)."""


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def api() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI() as fake:
        yield fake


@pytest.fixture
def runtime(
    api: FakeRuntimeAPI, upstream: FakeUpstream, local_table: tuple[Any, str], tmp_path: Path
) -> Iterator[RuntimeProcess]:
    """The real app on the `openai` provider, its timeout far above the waits."""
    env = {
        "API_KEYS": KEY,
        "MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-up",
        "OPENAI_TIMEOUT_SECONDS": "60",
        "MODELS": "smart=up-1",
    }
    with RuntimeProcess(api.address, env=env, log_path=tmp_path / "runtime.log") as process:
        yield process


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


def stored(store: DynamoDBSessionStore, session: str) -> list[dict[str, Any]]:
    state = asyncio.run(store.load(SessionKey(owner=principal_id(KEY), session_id=session), 100))
    return state.messages


def served(api: FakeRuntimeAPI, event: dict[str, Any], **queue_args: Any) -> Invocation:
    return api.wait(api.queue(event, **queue_args), timeout=60)


def answer(invocation: Invocation) -> tuple[dict[str, Any], Any]:
    """The prelude and the JSON payload of a buffered (non-streamed) answer."""
    assert invocation.response is not None, invocation.error
    prelude, payload = invocation.response.split()
    assert prelude["statusCode"] == 200, payload
    return prelude, json.loads(payload)


def sse_events(payload: bytes) -> list[dict[str, Any]]:
    """The JSON of each `data:` line of an event stream (comments and `[DONE]` left out)."""
    lines = payload.decode().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def chat(text_: str, *, session: str | None = None, stream: bool = False) -> dict[str, Any]:
    body = {"model": "smart", "stream": stream, "messages": [{"role": "user", "content": text_}]}
    headers = {**AUTH, "X-Hermes-Session-Id": session} if session else AUTH
    return rest_event("POST", "/v1/chat/completions", body, headers=headers)


def respond(input_: str, *, previous: str | None = None, stream: bool = False, store: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "smart", "stream": stream, "input": input_, "store": store}
    if previous:
        body["previous_response_id"] = previous
    return rest_event("POST", "/v1/responses", body, headers=AUTH)


def assert_cancelled(record: RecordedRequest, cut_at: float) -> float:
    """The upstream request ended because the runtime hung up; how long after the cut."""
    record.wait_done(timeout=CANCEL_WAIT)
    assert record.disconnected and not record.completed, "the model ran on after the client left"
    assert record.finished_at is not None
    return record.finished_at - cut_at


def assert_cut_quietly(process: RuntimeProcess) -> None:
    """A client leaving is not the function failing: a log line, no traceback, no ERROR."""
    log = process.log()
    assert "the client has gone" in log
    assert "Traceback" not in log, log
    assert "[ERROR]" not in log and '"level":"ERROR"' not in log, log


def test_a_chat_stream_cut_by_the_runtime_api_cancels_the_model_and_stores_nothing(
    api: FakeRuntimeAPI, upstream: FakeUpstream, runtime: RuntimeProcess, store: DynamoDBSessionStore
) -> None:
    upstream.push(text("Answer one."))
    prelude, _ = answer(served(api, chat("one")))
    session = prelude["headers"][SESSION]
    before = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "Answer one."}]
    assert stored(store, session) == before

    upstream.push(text(LONG_ANSWER, gap=0.1))
    cut = served(api, chat("tell me everything", session=session, stream=True), cut_after=b"word2")
    assert cut.response is not None and cut.response.cut_at is not None, runtime.log()
    assert b"word2" in cut.response.body and b"word59" not in cut.response.body
    record = upstream.last
    assert_cancelled(record, cut.response.cut_at)
    assert len(record.chunk_times) < 60
    assert stored(store, session) == before  # the abandoned turn was not kept

    # The same process serves the next invocation, and the session goes on from `before`.
    upstream.push(text("Answer two."))
    _, body = answer(served(api, chat("two", session=session)))
    assert body["choices"][0]["message"]["content"] == "Answer two."
    assert upstream.last.body["messages"] == [*before, {"role": "user", "content": "two"}]
    assert stored(store, session) == [
        *before,
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "Answer two."},
    ]
    assert runtime.process is not None and runtime.process.poll() is None
    assert_cut_quietly(runtime)


def test_a_responses_stream_reset_while_the_model_is_silent_cancels_it_at_once(
    api: FakeRuntimeAPI, upstream: FakeUpstream, runtime: RuntimeProcess, store: DynamoDBSessionStore
) -> None:
    """Nothing is being written (the model thinks for 10 s, the keepalive is 15 s away):
    the runtime still notices the reset connection and cancels the model call (of a
    plain stream, `store: false`: a stored one is recorded and goes on, below)."""
    upstream.push(text("Answer one."))
    prelude, first = answer(served(api, respond("one")))
    session = prelude["headers"][SESSION]
    before = stored(store, session)
    assert len(before) == 2

    upstream.push(stall(10.0, after=("Let me think",)))
    event = respond("hard question", previous=first["id"], stream=True, store=False)
    cut = served(api, event, cut_after=b"Let me think", cut_with_reset=True)
    assert cut.response is not None and cut.response.cut_at is not None, runtime.log()
    created = next(frame for frame in sse_events(cut.response.split()[1]) if frame["type"] == "response.created")
    assert_cancelled(upstream.last, cut.response.cut_at)
    assert stored(store, session) == before

    # The abandoned response is not retrievable; continuing the first one appends to its session.
    gone = served(api, rest_event("GET", f"/v1/responses/{created['response']['id']}", headers=AUTH))
    assert gone.response is not None and gone.response.split()[0]["statusCode"] == 404
    upstream.push(text("Answer two."))
    _, second = answer(served(api, respond("two", previous=first["id"])))
    assert second["output"][0]["content"][0]["text"] == "Answer two."
    assert upstream.last.body["messages"] == [*before, {"role": "user", "content": "two"}]
    assert len(stored(store, session)) == 4
    assert_cut_quietly(runtime)


def test_a_stored_responses_stream_goes_on_after_a_reset_and_is_replayed_by_the_next_invocation(
    api: FakeRuntimeAPI, upstream: FakeUpstream, runtime: RuntimeProcess, store: DynamoDBSessionStore
) -> None:
    """A stored stream is recorded (issue 13): the runtime finishes the run after the
    client left, before it takes the next invocation, which replays every event."""
    upstream.push(text("Answer one."))
    _, first = answer(served(api, respond("one")))
    upstream.push(text(("Let me think", " about", " it", " carefully."), gap=0.3))
    cut = served(api, respond("hard question", previous=first["id"], stream=True), cut_after=b"Let me think")
    assert cut.response is not None and cut.response.cut_at is not None, runtime.log()
    prelude, payload = cut.response.split()
    session = prelude["headers"][SESSION]
    created = next(frame for frame in sse_events(payload) if frame["type"] == "response.created")
    response_id = created["response"]["id"]
    upstream.last.wait_done(timeout=CANCEL_WAIT)
    assert upstream.last.completed and not upstream.last.disconnected, "the run stopped with its client"
    replay = served(api, rest_event("GET", f"/v1/responses/{response_id}", headers=AUTH, query={"stream": "true"}))
    assert replay.response is not None
    events = sse_events(replay.response.split()[1])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Let me think about it carefully."
    assert [m["role"] for m in stored(store, session)] == ["user", "assistant", "user", "assistant"]


def test_a_connection_closed_while_the_model_is_silent_is_noticed_too(
    api: FakeRuntimeAPI, upstream: FakeUpstream, runtime: RuntimeProcess
) -> None:
    upstream.push(stall(10.0, after=("Let me think",)))
    cut = served(api, chat("hard question", stream=True), cut_after=b"Let me think")
    assert cut.response is not None and cut.response.cut_at is not None, runtime.log()
    assert_cancelled(upstream.last, cut.response.cut_at)
    upstream.push(text("Fine."))
    _, body = answer(served(api, chat("again")))
    assert body["choices"][0]["message"]["content"] == "Fine."
    assert_cut_quietly(runtime)
