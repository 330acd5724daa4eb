"""DynamoDB faults: throttling, 5xx, timeouts and lost answers, on the real DynamoDB Local.

The app runs in-process (ASGI) with the echo model on a store whose botocore client
(the production configuration: standard retries, 3 attempts, 2 s / 5 s timeouts)
gets faults injected per attempt through its `before-send` hook; see `faults.py` for
why hooks and not a proxy. What the README promises ("Sessions", "Errors"):

- a session that cannot be read (after the client's retries) gives empty history,
  the request succeeds, a warning names the session and a metric counts it;
- writes are retried; a turn that cannot be written is a 503 in the contract's
  shape, logged and counted, and nothing of it is stored;
- whatever failed, the session read back afterwards is whole: every turn's user and
  assistant messages adjacent and in order, none duplicated, no gap in `seq`; and a
  further turn works and sees exactly that history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.base import SessionKey, StoreUnavailable, UsageTotals
from core.store.codec import parse_head
from core.store.dynamodb import HEAD_SK, DynamoDBSessionStore, session_pk
from handler.app import create_app
from tests.conftest import table_items
from tests.reliability.contract import assert_contract_error, sse_frames
from tests.reliability.faults import (
    CONNECTION_REFUSED,
    INTERNAL,
    LOST_RESPONSE,
    READ_TIMEOUT,
    THROTTLED,
    THROTTLING,
    UNAVAILABLE,
    BlackHole,
    DynamoDBFaults,
    Fault,
)

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
OWNER = "open"
PASS = Fault("pass", lambda request: None)


# --------------------------------------------------------------------------- helpers


def build_app(store: DynamoDBSessionStore) -> Any:
    settings = Settings(sessions_table=store.table_name, telemetry=True)
    return create_app(ChatService(store, EchoProvider(), settings), settings=settings)


@pytest.fixture
async def api(store: DynamoDBSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline.test", timeout=60) as http:
        yield http


@pytest.fixture
def faults(store: DynamoDBSessionStore) -> Any:
    with DynamoDBFaults(store.client) as injector:
        yield injector


async def say(api: httpx.AsyncClient, text: str, session: str | None = None, *, stream: bool = False) -> httpx.Response:
    headers = {HEADER: session} if session is not None else {}
    body = {"model": "echo", "stream": stream, "messages": [{"role": "user", "content": text}]}
    return await api.post("/v1/chat/completions", json=body, headers=headers)


def reply_text(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        chunks = [json.loads(f) for f in sse_frames(response.text) if f != "[DONE]"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return str(response.json()["choices"][0]["message"]["content"])


async def committed(store: DynamoDBSessionStore, session: str) -> list[tuple[int, dict[str, Any]]]:
    """(seq, message) of every committed message, read with a clean client."""
    page = await store.list_messages(SessionKey(OWNER, session), limit=100, after=None)
    return [] if page is None else [(m.seq, m.message) for m in page.items]


async def assert_whole(store: DynamoDBSessionStore, session: str, user_texts: list[str]) -> None:
    """The session holds exactly these turns, each whole, in this order, and nothing else."""
    messages = await committed(store, session)
    seqs = [seq for seq, _ in messages]
    assert seqs == list(range(len(seqs))), f"gap, repeat or disorder in seq: {seqs}"
    assert len(messages) == 2 * len(user_texts), [m for _, m in messages]
    for index, text in enumerate(user_texts):
        question, answer = messages[2 * index][1], messages[2 * index + 1][1]
        assert question == {"role": "user", "content": text}
        assert answer["role"] == "assistant" and answer["content"].startswith(f"Echo: {text} ("), answer
    items = table_items(store.client, store.table_name)
    pk = session_pk(SessionKey(OWNER, session))
    heads = [i for i in items if i["pk"]["S"] == pk and i["sk"]["S"] == HEAD_SK]
    leftovers = [i for i in items if i["pk"]["S"] == pk and i["sk"]["S"].startswith("MSG#")]
    if user_texts:
        assert int(heads[0]["next_seq"]["N"]) == seqs[-1] + 1
        # Usage per session: each stored turn's usage counted once in the head's totals,
        # however often its write was attempted; a turn that failed counts nothing.
        page = await store.list_messages(SessionKey(OWNER, session), limit=100, after=None)
        assert page is not None
        replies = [m.usage for m in page.items[1::2]]
        assert None not in replies
        assert parse_head(heads[0]).usage == UsageTotals(
            input_tokens=sum(u.input_tokens for u in replies if u),
            output_tokens=sum(u.output_tokens for u in replies if u),
            turns=len(user_texts),
        )
    assert len(leftovers) == len(messages), "message items outside the committed range were left behind"


def emf(out: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF blobs printed on stdout, as {metric or dim:name: value}."""
    blobs = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        if "_aws" not in data:
            continue
        values: dict[str, Any] = {}
        for directive in data["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = data[metric["Name"]]
                values[metric["Name"]] = value[0] if isinstance(value, list) else value
            values.update({f"dim:{d}": data[d] for dims in directive["Dimensions"] for d in dims})
        blobs.append(values)
    return blobs


def errors_counted(out: str) -> list[str]:
    return [blob["dim:code"] for blob in emf(out) if "Errors" in blob]


def read_fallbacks(out: str) -> list[float]:
    return [blob["StoreReadFallbacks"] for blob in emf(out) if "StoreReadFallbacks" in blob]


def chat_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "threadline.chat" and r.levelno == level]


# --------------------------------------------------------------------------- the client


def test_the_store_client_is_configured_as_the_readme_says(local_table: tuple[Any, str]) -> None:
    """What every test below relies on: standard retries, 3 attempts, 2 s / 5 s timeouts."""
    client, _ = local_table
    config = client.meta.config
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (2, 5)


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("fault", [THROTTLED, INTERNAL, READ_TIMEOUT, CONNECTION_REFUSED], ids=repr)
async def test_a_read_that_keeps_failing_goes_on_with_empty_history(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    clean_store: DynamoDBSessionStore,
    fault: Fault,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await say(api, "first", "s-read")).status_code == 200
    before = faults.attempts["Query"]
    capsys.readouterr()
    caplog.set_level(logging.WARNING, logger="threadline.chat")

    faults.always("Query", fault)
    response = await say(api, "second", "s-read")
    faults.clear()

    assert response.status_code == 200, response.text
    assert reply_text(response) == "Echo: second (I was given 1 message.)"  # rule 7: empty history
    assert faults.attempts["Query"] - before == 3  # the client's own retries, then the fallback
    warnings = chat_records(caplog, logging.WARNING)
    assert [getattr(r, "session_id", None) for r in warnings] == ["s-read"]
    assert read_fallbacks(capsys.readouterr().out) == [1]
    # The turn went on top of the history it could not read: nothing overwritten.
    await assert_whole(clean_store, "s-read", ["first", "second"])
    assert reply_text(await say(api, "third", "s-read")) == "Echo: third (I was given 5 messages.)"
    await assert_whole(clean_store, "s-read", ["first", "second", "third"])


async def test_a_read_that_recovers_within_the_retries_sees_the_whole_history(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await say(api, "first", "s-flaky")).status_code == 200
    before = faults.attempts["Query"]
    capsys.readouterr()
    faults.fail("Query", THROTTLED, INTERNAL)
    response = await say(api, "second", "s-flaky")
    assert reply_text(response) == "Echo: second (I was given 3 messages.)"
    assert faults.attempts["Query"] - before == 3
    assert chat_records(caplog, logging.WARNING) == []
    assert read_fallbacks(capsys.readouterr().out) == [0]


async def test_the_store_failure_log_lines_name_the_session_in_their_text(
    api: httpx.AsyncClient, faults: DynamoDBFaults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="threadline.chat")
    faults.always("Query", INTERNAL).always("TransactWriteItems", INTERNAL)
    assert (await say(api, "hello", "s-named-in-logs")).status_code == 503
    records = chat_records(caplog, logging.WARNING) + chat_records(caplog, logging.ERROR)
    assert len(records) == 2
    for record in records:
        assert "s-named-in-logs" in logging.Formatter("[%(levelname)s]\t%(message)s").format(record)


# --------------------------------------------------------------------------- writes that land


@pytest.mark.parametrize(
    "failures",
    [
        (THROTTLING, THROTTLED),
        (INTERNAL, UNAVAILABLE),
        (READ_TIMEOUT, CONNECTION_REFUSED),
        (LOST_RESPONSE, LOST_RESPONSE),
    ],
    ids=lambda failures: "+".join(map(repr, failures)),
)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
async def test_a_write_is_retried_and_the_turn_is_stored_once(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    clean_store: DynamoDBSessionStore,
    failures: tuple[Fault, Fault],
    stream: bool,
) -> None:
    """Two failed attempts, then the third lands. With LOST_RESPONSE both failed attempts
    were applied by DynamoDB: botocore resends the same ClientRequestToken, so the
    transaction is still applied once."""
    assert (await say(api, "first", "s-write")).status_code == 200
    before = faults.attempts["TransactWriteItems"]
    faults.fail("TransactWriteItems", *failures)
    response = await say(api, "second", "s-write", stream=stream)
    assert response.status_code == 200, response.text
    assert reply_text(response) == "Echo: second (I was given 3 messages.)"
    if stream:
        assert sse_frames(response.text)[-1] == "[DONE]"
    assert faults.attempts["TransactWriteItems"] - before == 3
    await assert_whole(clean_store, "s-write", ["first", "second"])


# --------------------------------------------------------------------------- writes that fail


@pytest.mark.parametrize("fault", [THROTTLING, INTERNAL, UNAVAILABLE, READ_TIMEOUT], ids=repr)
async def test_a_write_that_finally_fails_is_a_503_logged_counted_and_stores_nothing(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    clean_store: DynamoDBSessionStore,
    fault: Fault,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await say(api, "first", "s-down")).status_code == 200
    before = faults.attempts["TransactWriteItems"]
    capsys.readouterr()
    caplog.set_level(logging.WARNING, logger="threadline.chat")

    faults.always("TransactWriteItems", fault)
    response = await say(api, "second", "s-down")
    faults.clear()

    assert response.status_code == 503
    assert_contract_error(503, response.content, code="service_unavailable")
    assert response.headers[HEADER] == "s-down"
    assert faults.attempts["TransactWriteItems"] - before == 3
    assert [getattr(r, "session_id", None) for r in chat_records(caplog, logging.ERROR)] == ["s-down"]
    assert errors_counted(capsys.readouterr().out) == ["service_unavailable"]
    await assert_whole(clean_store, "s-down", ["first"])
    # The client's retry starts clean: the model sees the history without the failed turn.
    assert reply_text(await say(api, "second", "s-down")) == "Echo: second (I was given 3 messages.)"
    await assert_whole(clean_store, "s-down", ["first", "second"])


async def test_a_streamed_turn_whose_write_fails_ends_with_an_error_frame(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    clean_store: DynamoDBSessionStore,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await say(api, "first", "s-stream-down")).status_code == 200
    capsys.readouterr()
    caplog.set_level(logging.WARNING, logger="threadline.chat")
    faults.always("TransactWriteItems", INTERNAL)
    response = await say(api, "second", "s-stream-down", stream=True)
    faults.clear()

    assert response.status_code == 200 and response.headers[HEADER] == "s-stream-down"
    frames = sse_frames(response.text)
    assert "[DONE]" not in frames
    *chunks, last = (json.loads(frame) for frame in frames)
    assert_contract_error(503, last, code="service_unavailable")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)  # never told it was done
    assert [getattr(r, "session_id", None) for r in chat_records(caplog, logging.ERROR)] == ["s-stream-down"]
    assert errors_counted(capsys.readouterr().out) == ["service_unavailable"]
    await assert_whole(clean_store, "s-stream-down", ["first"])
    assert reply_text(await say(api, "third", "s-stream-down", stream=True)).endswith("(I was given 3 messages.)")


async def test_a_new_session_whose_write_fails_does_not_exist_afterwards(
    api: httpx.AsyncClient, faults: DynamoDBFaults, clean_store: DynamoDBSessionStore
) -> None:
    faults.always("TransactWriteItems", INTERNAL)
    response = await say(api, "hello")
    faults.clear()
    assert response.status_code == 503
    assert_contract_error(503, response.content, code="service_unavailable")
    session = response.headers[HEADER]
    assert (await api.get(f"/v1/sessions/{session}/messages")).status_code == 404
    assert (await api.get("/v1/sessions")).json()["data"] == []
    assert table_items(clean_store.client, clean_store.table_name) == []


async def test_a_large_new_session_whose_commit_fails_leaves_nothing(
    api: httpx.AsyncClient, faults: DynamoDBFaults, clean_store: DynamoDBSessionStore
) -> None:
    """A new session of more than one transaction writes its first parts, then commits
    with the head: when the commit fails, the parts already written are deleted again
    (and would never be read if that failed too)."""
    conversation = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(150)] + [
        {"role": "user", "content": "last"}
    ]
    faults.fail("TransactWriteItems", PASS).always("TransactWriteItems", INTERNAL)
    response = await api.post("/v1/chat/completions", json={"model": "echo", "messages": conversation})
    faults.clear()
    assert response.status_code == 503
    assert faults.attempts["TransactWriteItems"] == 1 + 3
    session = response.headers[HEADER]
    assert (await api.get(f"/v1/sessions/{session}/messages")).status_code == 404
    assert (await api.get("/v1/sessions")).json()["data"] == []
    assert table_items(clean_store.client, clean_store.table_name) == []  # not even the parts
    assert (await api.post("/v1/chat/completions", json={"model": "echo", "messages": conversation})).status_code == 200


async def test_a_commit_whose_answer_was_lost_is_never_reported_as_not_stored(
    api: httpx.AsyncClient, faults: DynamoDBFaults, clean_store: DynamoDBSessionStore
) -> None:
    assert (await say(api, "first", "s-ambiguous")).status_code == 200
    faults.fail("TransactWriteItems", LOST_RESPONSE, INTERNAL, INTERNAL)
    response = await say(api, "second", "s-ambiguous")
    faults.clear()
    if response.status_code == 503:
        await assert_whole(clean_store, "s-ambiguous", ["first"])  # the 503 says nothing was stored
        assert (await say(api, "second", "s-ambiguous")).status_code == 200  # so the client retries
    else:
        assert response.status_code == 200
    await assert_whole(clean_store, "s-ambiguous", ["first", "second"])


# --------------------------------------------------------------------------- other routes


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("GET", "/v1/sessions", "Query"),
        ("GET", "/v1/sessions/s-routes/messages", "GetItem"),
        ("DELETE", "/v1/sessions/s-routes", "GetItem"),
        ("DELETE", "/v1/sessions/s-routes", "BatchWriteItem"),
    ],
    ids=lambda value: str(value).replace("/", "_"),
)
async def test_session_routes_answer_a_503_in_the_contract_shape_when_the_store_fails(
    api: httpx.AsyncClient,
    faults: DynamoDBFaults,
    clean_store: DynamoDBSessionStore,
    method: str,
    path: str,
    operation: str,
) -> None:
    assert (await say(api, "first", "s-routes")).status_code == 200
    faults.always(operation, INTERNAL)
    response = await api.request(method, path)
    faults.clear()
    assert response.status_code == 503
    assert_contract_error(503, response.content, code="service_unavailable")
    await assert_whole(clean_store, "s-routes", ["first"])
    # A failed delete can be retried and then removes everything.
    assert (await api.delete("/v1/sessions/s-routes")).status_code == 200
    assert table_items(clean_store.client, clean_store.table_name) == []


# --------------------------------------------------------------------------- real timeouts


def test_a_dynamodb_that_never_answers_is_bounded_by_the_client_timeouts(
    local_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, report: Callable[[str, str], None]
) -> None:
    """A socket that accepts and never answers: the production client (its read timeout
    shortened from 5 s to 0.5 s, nothing else changed) gives up after 3 attempts, and the
    app answers a 503 instead of hanging."""
    import core.store.client as client_module

    _, name = local_table
    with BlackHole() as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", hole.url)
        monkeypatch.setattr(client_module, "READ_TIMEOUT_SECONDS", 0.5)
        client = client_module.get_dynamodb_client.__wrapped__()
        assert client.meta.config.read_timeout == 0.5 and client.meta.endpoint_url == hole.url
        store = DynamoDBSessionStore(name, ttl_days=30, client=client)

        started = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            asyncio.run(store.load(SessionKey(OWNER, "s-hole"), 10))
        load_seconds = time.perf_counter() - started
        assert len(hole.connections) == 3  # each timed-out attempt drops its connection

        async def one_turn() -> httpx.Response:
            transport = httpx.ASGITransport(app=build_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://threadline.test") as http:
                return await say(http, "hello", "s-hole")

        started = time.perf_counter()
        response = asyncio.run(one_turn())
        turn_seconds = time.perf_counter() - started
    assert response.status_code == 503
    assert_contract_error(503, response.content, code="service_unavailable")
    report(
        "blackhole",
        f"DynamoDB black hole (read timeout 0.5 s, 3 attempts): load gave up after {load_seconds:.2f} s; "
        f"a turn got its 503 after {turn_seconds:.2f} s",
    )
