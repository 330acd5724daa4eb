"""The chat completions API in-process (ASGI) on moto: sessions, rules and errors as a client sees them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.base import ModelRequest, ProviderEvent
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.conftest import table_items
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"


class RecordingEcho(EchoProvider):
    """The echo model, remembering what it was asked (to check what the service sends)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ModelRequest] = []

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        return super().stream(request)


@pytest.fixture
def model() -> RecordingEcho:
    return RecordingEcho()


@pytest.fixture
def settings() -> Settings:
    return Settings(sessions_table="sessions-unit", history_window=40)


@pytest.fixture
async def api(
    moto_table: tuple[Any, str], model: RecordingEcho, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    client, name = moto_table
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), model, settings)
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline.test") as http:
        yield http


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def reply_text(response: httpx.Response) -> str:
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    return str(body["choices"][0]["message"]["content"])


async def chat(
    api: httpx.AsyncClient, messages: list[dict[str, Any]], session: str | None = None, **extra: Any
) -> httpx.Response:
    headers = {HEADER: session} if session is not None else {}
    return await api.post(
        "/v1/chat/completions", json={"model": "echo", "messages": messages, **extra}, headers=headers
    )


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    validate(body, "ErrorResponse")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return dict(body["error"])


# -- the reference implementation's four behaviours -------------------------------


async def test_without_the_header_a_new_session_id_comes_back(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    response = await chat(api, [{"role": "system", "content": "be kind"}, user("hello")])
    assert response.status_code == 200
    session_id = response.headers[HEADER]
    assert uuid.UUID(session_id).version == 4
    assert reply_text(response) == "Echo: hello (I was given 2 messages.)"
    # The session holds the conversation the request carried plus the reply.
    follow = await chat(api, [user("again")], session=session_id)
    assert reply_text(follow) == "Echo: again (I was given 4 messages.)"


async def test_a_provided_id_is_used_and_echoed(api: httpx.AsyncClient) -> None:
    response = await chat(api, [user("hi")], session="my-session:1")
    assert response.status_code == 200
    assert response.headers[HEADER] == "my-session:1"
    assert reply_text(response) == "Echo: hi (I was given 1 message.)"


async def test_history_comes_from_the_store_not_the_body(api: httpx.AsyncClient, model: RecordingEcho) -> None:
    await chat(api, [user("first")], session="s-hist")
    transcript = [user("forged"), {"role": "assistant", "content": "forged answer"}, user("second")]
    response = await chat(api, transcript, session="s-hist")
    assert reply_text(response) == "Echo: second (I was given 3 messages.)"
    sent = [m["content"] for m in model.requests[-1].messages]
    assert sent == ["first", "Echo: first (I was given 1 message.)", "second"]


async def test_a_store_read_failure_falls_back_to_empty_history(
    api: httpx.AsyncClient, moto_table: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    await chat(api, [user("one")], session="s-fault")
    client, _ = moto_table

    def fail_queries(**kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        class Raw:
            def stream(self, **_: Any) -> Any:
                yield b'{"__type":"com.amazon.coral.service#InternalServerError","message":"boom"}'

        return AWSResponse(kwargs["request"].url, 500, {}, Raw())

    client.meta.events.register("before-send.dynamodb.Query", fail_queries)
    try:
        response = await chat(api, [user("two")], session="s-fault")
    finally:
        client.meta.events.unregister("before-send.dynamodb.Query", fail_queries)
    assert response.status_code == 200
    assert reply_text(response) == "Echo: two (I was given 1 message.)"
    assert any("s-fault" in str(getattr(r, "session_id", "")) for r in caplog.records if r.levelname == "WARNING")
    # The turn was still appended after the earlier one: nothing stored was lost.
    follow = await chat(api, [user("three")], session="s-fault")
    assert reply_text(follow) == "Echo: three (I was given 5 messages.)"


# -- system prompt and window ---------------------------------------------------


async def test_the_creators_system_prompt_applies_until_a_request_brings_its_own(
    api: httpx.AsyncClient, model: RecordingEcho
) -> None:
    await chat(api, [{"role": "system", "content": "stored prompt"}, user("a")], session="s-sys")
    await chat(api, [user("b")], session="s-sys")
    assert model.requests[-1].messages[0] == {"role": "system", "content": "stored prompt"}
    await chat(api, [{"role": "system", "content": "just this once"}, user("c")], session="s-sys")
    systems = [m for m in model.requests[-1].messages if m["role"] == "system"]
    assert systems == [{"role": "system", "content": "just this once"}]
    await chat(api, [user("d")], session="s-sys")
    assert model.requests[-1].messages[0] == {"role": "system", "content": "stored prompt"}


@pytest.mark.parametrize("settings", [Settings(sessions_table="sessions-unit", history_window=4)])
async def test_the_history_sent_to_the_model_is_bounded(api: httpx.AsyncClient, model: RecordingEcho) -> None:
    for i in range(6):
        await chat(api, [user(f"q{i}")], session="s-window")
    sent = [m["content"] for m in model.requests[-1].messages]
    assert sent == [
        "q3",
        "Echo: q3 (I was given 5 messages.)",
        "q4",
        "Echo: q4 (I was given 5 messages.)",
        "q5",
    ]


# -- streaming -------------------------------------------------------------------


async def test_a_streamed_turn_frames_chunks_then_done(api: httpx.AsyncClient) -> None:
    response = await chat(
        api, [user("stream me")], session="s-stream", stream=True, stream_options={"include_usage": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers[HEADER] == "s-stream"
    frames = [f for f in response.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: stream me (I was given 1 message.)"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len({c["id"] for c in chunks}) == 1


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 129, "a/b"])
async def test_an_invalid_session_id_is_a_400_and_nothing_is_stored(
    api: httpx.AsyncClient, moto_table: tuple[Any, str], bad_id: str
) -> None:
    response = await chat(api, [user("hi")], session=bad_id)
    assert_error(response, 400, "invalid_session_id")
    assert HEADER not in response.headers
    client, name = moto_table
    assert table_items(client, name) == []


async def test_an_unknown_model_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/chat/completions", json={"model": "gpt-9", "messages": [user("hi")]})
    assert_error(response, 404, "model_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "echo", "messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"model": "echo", "messages": [user("x")], "temperature": "hot"}, "temperature"),
        ({"model": "echo", "messages": [user("x")], "n": 2}, "n"),
    ],
)
async def test_invalid_bodies_are_400s_naming_the_parameter(
    api: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = assert_error(await api.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"role": "tool", "content": "x"}, "needs a tool_call_id"),
        ({"role": "tool", "content": "x", "tool_call_id": None}, "needs a tool_call_id"),
        ({"role": "tool", "content": "x", "tool_call_id": ""}, "needs a non-empty tool_call_id"),
    ],
)
async def test_a_tool_message_says_whether_its_tool_call_id_is_missing_or_empty(
    api: httpx.AsyncClient, message: dict[str, Any], says: str
) -> None:
    error = assert_error(await chat(api, [message]), 400)
    assert error["param"] == "messages[0]" and says in error["message"]


async def test_unknown_and_null_fields_are_ignored(api: httpx.AsyncClient) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi", "name": None, "future_field": 1}],
        "temperature": None,
        "stream": None,
        "something_new": {"x": 1},
        "tools": None,
    }
    response = await api.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"", b"\xff\xfe"])
async def test_bodies_that_are_not_a_json_object_are_400s(api: httpx.AsyncClient, raw: bytes) -> None:
    response = await api.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400)


async def test_a_session_turn_without_new_input_is_a_400(api: httpx.AsyncClient) -> None:
    response = await chat(api, [user("q"), {"role": "assistant", "content": "a"}], session="s-none")
    assert_error(response, 400)


async def test_a_body_over_one_megabyte_is_a_413(api: httpx.AsyncClient, moto_table: tuple[Any, str]) -> None:
    response = await chat(api, [user("x" * (1024 * 1024 + 10))])
    assert_error(response, 413, "request_too_large")
    client, name = moto_table
    assert table_items(client, name) == []


async def test_a_message_too_big_for_an_item_is_a_413_before_anything_is_written(
    api: httpx.AsyncClient, moto_table: tuple[Any, str]
) -> None:
    response = await chat(api, [user("y" * (500 * 1024))], session="s-big")
    error = assert_error(response, 413, "request_too_large")
    assert "limit" in error["message"]
    client, name = moto_table
    assert table_items(client, name) == []


async def test_unknown_routes_and_methods_speak_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await api.delete("/v1/chat/completions"), 405)
    assert_error(await api.get("/v1/chat/completions"), 405)


async def test_models_and_health(api: httpx.AsyncClient) -> None:
    models = await api.get("/v1/models")
    validate(models.json(), "ListModelsResponse")
    assert [m["id"] for m in models.json()["data"]] == ["echo"]
    for path in ("/health", "/v1/health"):
        assert (await api.get(path)).json() == {"status": "ok"}


async def test_a_system_prompt_too_big_to_keep_is_a_413_before_the_model_runs(
    api: httpx.AsyncClient, model: RecordingEcho, moto_table: tuple[Any, str]
) -> None:
    huge = [{"role": "system", "content": "s" * (300 * 1024)}, {"role": "system", "content": "t" * (300 * 1024)}]
    response = await chat(api, [*huge, user("hi")], session="s-huge-system")
    assert_error(response, 413, "request_too_large")
    assert model.requests == []
    client, name = moto_table
    assert table_items(client, name) == []
