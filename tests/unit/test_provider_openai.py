"""OpenAIProvider against a real local OpenAI-compatible server (tests/fakes/openai_upstream.py).

Everything goes through the real `openai` SDK and real HTTP on 127.0.0.1, so these
tests show what a user of the service would see: streaming timing, forwarded
fields, error statuses and messages, timeouts, drops and early disconnects.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.errors import ApiError
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage
from core.providers.openai_compat import OpenAIProvider
from tests.fakes.openai_upstream import (
    FakeUpstream,
    RecordedRequest,
    ToolCall,
    drop,
    error,
    raw,
    stall,
    text,
    tool_calls,
)

API_KEY = "sk-test-secret-key"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the tests"},
]
# Things that must never reach a client in an error message.
LEAKS = ("Error code", "127.0.0.1", "http://", API_KEY, "Traceback", "openai", "httpx")


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest_asyncio.fixture(loop_scope="function")
async def make_provider(upstream: FakeUpstream) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    """Providers pointed at the fake, closed after the test (on the test's own loop)."""
    made: list[OpenAIProvider] = []

    def make(**kwargs: Any) -> OpenAIProvider:
        settings: dict[str, Any] = {"base_url": upstream.base_url, "api_key": API_KEY, "timeout_seconds": 5}
        made.append(OpenAIProvider(**{**settings, **kwargs}))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: Callable[..., OpenAIProvider]) -> OpenAIProvider:
    return make_provider()


def request(model: str = "gpt-4o-mini", **options: object) -> ModelRequest:
    return ModelRequest(model=model, messages=[dict(m) for m in MESSAGES], options=dict(options))


async def collect(provider: OpenAIProvider, req: ModelRequest) -> tuple[list[ProviderEvent], ApiError | None]:
    """All events up to the end or the error (the error is returned, not raised)."""
    events: list[ProviderEvent] = []
    try:
        async for event in provider.stream(req):
            events.append(event)
    except ApiError as exc:
        return events, exc
    return events, None


async def outcome(sent: RecordedRequest) -> RecordedRequest:
    """Wait (without blocking the loop, which may have closing to do) for the upstream's side of the story."""
    return await asyncio.to_thread(sent.wait_done, 3.0)


def texts(events: list[ProviderEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def assert_safe(exc: ApiError) -> None:
    for leak in LEAKS:
        assert leak not in exc.message, f"{leak!r} leaked into {exc.message!r}"


# --------------------------------------------------------------------------- streaming text


async def test_text_arrives_as_separate_deltas_in_order(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(text(["Hello", " there", ",", " tests", "!"]))

    events, exc = await collect(provider, request())

    assert exc is None
    assert texts(events) == ["Hello", " there", ",", " tests", "!"]
    assert "".join(texts(events)) == "Hello there, tests!"
    assert isinstance(events[-1], Finish)
    assert [e for e in events if isinstance(e, Finish)] == [events[-1]]
    assert events[-1].reason == "stop"
    # The upstream's empty role chunk is not forwarded as an empty delta.
    assert all(t for t in texts(events))


async def test_deltas_are_yielded_as_the_upstream_sends_them(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(text(["one", " two", " three", " four", " five"], gap=0.2))

    received: list[float] = []
    async for event in provider.stream(request()):
        if isinstance(event, TextDelta):
            received.append(time.monotonic())

    sent = upstream.last.wait_done().chunk_times
    assert len(sent) == len(received) == 5
    # The first delta is in our hands long before the upstream sends its last one ...
    assert received[0] < sent[-1] - 0.5
    # ... and every delta arrives after it was sent and before the next one was: no batching.
    for i in range(4):
        assert sent[i] <= received[i] < sent[i + 1]


async def test_usage_is_reported(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(text("Counting tokens", usage=(11, 7)))

    events, exc = await collect(provider, request())

    assert exc is None
    assert events[-1] == Finish("stop", Usage(prompt_tokens=11, completion_tokens=7))
    sent = upstream.last.body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_model_messages_options_and_key_are_forwarded(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    req = request("fake-model", temperature=0.25, max_tokens=42, seed=7, stop=["\n\n"], user="u-1")

    events, exc = await collect(provider, req)

    assert exc is None and isinstance(events[-1], Finish)
    sent = upstream.last
    assert sent.body["model"] == "fake-model"
    assert sent.body["messages"] == MESSAGES
    assert sent.body["temperature"] == 0.25
    assert sent.body["max_tokens"] == 42
    assert sent.body["seed"] == 7
    assert sent.body["stop"] == ["\n\n"]
    assert sent.body["user"] == "u-1"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


async def test_options_cannot_override_streaming(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    req = ModelRequest("gpt-4o-mini", [dict(m) for m in MESSAGES], {"stream": False, "model": "other"})

    events, exc = await collect(provider, req)

    assert exc is None and isinstance(events[-1], Finish)
    assert upstream.last.body["stream"] is True
    assert upstream.last.body["model"] == "gpt-4o-mini"


async def test_without_api_key_a_placeholder_is_sent(
    upstream: FakeUpstream, make_provider: Callable[..., OpenAIProvider]
) -> None:
    upstream.api_key = None  # like a local Ollama / vLLM
    try:
        provider = make_provider(api_key=None)
        events, exc = await collect(provider, request())
    finally:
        upstream.api_key = API_KEY
    assert exc is None and isinstance(events[-1], Finish)
    assert upstream.last.headers["authorization"].startswith("Bearer ")


# --------------------------------------------------------------------------- tools


WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
    },
]


async def test_tools_are_forwarded_and_tool_call_deltas_assemble(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    upstream.push(
        tool_calls(
            ToolCall("get_weather", {"city": "Paris", "unit": "c"}, id="call_weather", fragments=4),
            ToolCall("get_time", {"tz": "Europe/Paris"}, id="call_time", fragments=3),
        )
    )

    events, exc = await collect(
        provider, request(tools=WEATHER_TOOLS, tool_choice=tool_choice, parallel_tool_calls=True)
    )

    assert exc is None
    sent = upstream.last.body
    assert sent["tools"] == WEATHER_TOOLS
    assert sent["tool_choice"] == tool_choice
    assert sent["parallel_tool_calls"] is True

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["name"] = delta.name
        call["arguments"] += delta.arguments
    assert [calls[0]["id"], calls[0]["name"]] == ["call_weather", "get_weather"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert [calls[1]["id"], calls[1]["name"]] == ["call_time", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}
    # The arguments came in fragments, each forwarded as it arrived.
    assert sum(1 for d in deltas if d.index == 0 and d.arguments) == 4
    assert texts(events) == []
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == "tool_calls"


async def test_string_tool_choice_is_forwarded(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(tool_calls(ToolCall("get_time", "{}")))

    events, _ = await collect(provider, request(tools=WEATHER_TOOLS, tool_choice="required"))

    assert upstream.last.body["tool_choice"] == "required"
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"


# --------------------------------------------------------------------------- robustness


async def test_missing_and_null_fields_are_tolerated(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    upstream.push(
        raw(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
            {**base, "choices": None},
            {**base, "choices": "not a list"},
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": None}]}}]},
            {**base, "choices": [{"index": 0, "delta": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": None, "tool_calls": None}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
            {**base, "choices": [{"delta": {"content": " there"}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": ""}}]},
        )
    )

    events, exc = await collect(provider, request())

    assert exc is None
    assert texts(events) == ["Hi", " there"]
    # No finish_reason and no usage from this upstream.
    assert events[-1] == Finish("stop", None)


async def test_usage_on_a_choice_chunk_is_kept(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    upstream.push(
        raw(
            {**base, "choices": [{"index": 0, "delta": {"content": "ok"}}]},
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": None},
            },
        )
    )

    events, exc = await collect(provider, request())

    assert exc is None
    assert events[-1] == Finish("length", Usage(prompt_tokens=3, completion_tokens=0))


async def test_error_event_in_the_stream_is_a_502(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    upstream.push(
        raw(
            {**base, "choices": [{"index": 0, "delta": {"content": "Par"}}]},
            {"error": {"message": "upstream overloaded at http://10.0.0.1", "type": "server_error"}},
        )
    )

    events, exc = await collect(provider, request())

    assert texts(events) == ["Par"]
    assert exc is not None and exc.status == 502
    assert "10.0.0.1" not in exc.message
    assert_safe(exc)


async def test_garbage_in_the_stream_is_a_502(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(raw("this is not json", done=False))

    events, exc = await collect(provider, request())

    assert exc is not None and exc.status == 502
    assert not any(isinstance(e, Finish) for e in events)
    assert_safe(exc)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("reply", "status", "code", "says"),
    [
        (error(429), 429, "rate_limit_exceeded", "rate limiting"),
        (error(500), 502, "upstream_error", "failed"),
        (error(503), 502, "upstream_error", "failed"),
        (error(401), 502, "upstream_error", "credentials"),
        (error(403), 502, "upstream_error", "credentials"),
        (
            error(400, "Invalid value for 'temperature': must be <= 2.", param="temperature", code="invalid_value"),
            400,
            "invalid_value",
            "The model provider rejected the request: Invalid value for 'temperature': must be <= 2.",
        ),
        (
            error(404, "The model `nope` does not exist."),
            400,
            "model_not_found",
            "The model provider rejected the request: The model `nope` does not exist.",
        ),
        (error(422, "Unprocessable: messages[0]"), 400, None, "rejected the request: Unprocessable: messages[0]"),
        (error(400, raw_body="<html><body>Bad Request from nginx</body></html>"), 400, None, "rejected the request."),
    ],
    ids=["429", "500", "503", "401", "403", "400", "404-model", "422", "400-not-json"],
)
async def test_upstream_http_errors_map_to_our_statuses(
    provider: OpenAIProvider, upstream: FakeUpstream, reply: object, status: int, code: str | None, says: str
) -> None:
    upstream.default_reply = reply  # type: ignore[assignment]  # every attempt, retries included

    events, exc = await collect(provider, request())

    assert events == []
    assert exc is not None
    assert (exc.status, exc.code) == (status, code)
    assert says in exc.message
    assert "nginx" not in exc.message
    assert_safe(exc)
    body = exc.body()["error"]
    assert body["type"] == ("rate_limit_error" if status == 429 else "server_error" if status == 502 else body["type"])


async def test_rate_limits_and_5xx_are_retried_by_the_sdk(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.default_reply = error(500)

    _, exc = await collect(provider, request())

    assert exc is not None and exc.status == 502
    assert len(upstream.chat_requests) == 3  # max_retries=2


async def test_a_transient_5xx_is_invisible_after_a_retry(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(error(503), text("Recovered"))

    events, exc = await collect(provider, request())

    assert exc is None
    assert "".join(texts(events)) == "Recovered"
    assert len(upstream.chat_requests) == 2


async def test_client_errors_are_not_retried(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.default_reply = error(400, "bad")

    _, exc = await collect(provider, request())

    assert exc is not None and exc.status == 400
    assert len(upstream.chat_requests) == 1


async def test_upstream_rejection_message_is_truncated(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(error(400, "word " * 400))

    _, exc = await collect(provider, request())

    assert exc is not None and exc.status == 400
    prefix = "The model provider rejected the request: "
    assert exc.message.startswith(prefix)
    assert 0 < len(exc.message) - len(prefix) <= 300


async def test_wrong_key_is_a_502_about_credentials(make_provider: Callable[..., OpenAIProvider]) -> None:
    provider = make_provider(api_key="sk-wrong-key")

    _, exc = await collect(provider, request())

    assert exc is not None and exc.status == 502
    assert "credentials" in exc.message
    assert "sk-wrong-key" not in exc.message
    assert_safe(exc)


# --------------------------------------------------------------------------- timeouts, drops, disconnects


async def test_a_stall_beyond_the_timeout_is_a_502(
    upstream: FakeUpstream, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider(timeout_seconds=1, max_retries=0)
    upstream.push(stall(10))

    started = time.monotonic()
    events, exc = await collect(provider, request())

    assert time.monotonic() - started < 3
    assert events == []
    assert exc is not None and (exc.status, exc.code) == (502, "upstream_error")
    assert "timed out" in exc.message
    assert_safe(exc)
    # The upstream saw us give up.
    assert (await outcome(upstream.last)).disconnected


async def test_a_stall_mid_stream_is_a_502_after_the_deltas(
    upstream: FakeUpstream, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider(timeout_seconds=1, max_retries=0)
    upstream.push(stall(10, after=["Thinking", " hard"]))

    events, exc = await collect(provider, request())

    assert texts(events) == ["Thinking", " hard"]
    assert exc is not None and exc.status == 502
    assert "timed out" in exc.message


async def test_a_dropped_connection_is_a_502_after_the_received_deltas(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(drop(["Partial", " answer", " so"]))

    events, exc = await collect(provider, request())

    assert texts(events) == ["Partial", " answer", " so"]
    assert not any(isinstance(e, Finish) for e in events)
    assert exc is not None and (exc.status, exc.code) == (502, "upstream_error")
    assert_safe(exc)
    assert (await outcome(upstream.last)).dropped


async def test_an_unreachable_upstream_is_a_502() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", timeout_seconds=2, max_retries=0)

    events, exc = await collect(provider, request())

    assert events == []
    assert exc is not None and (exc.status, exc.code) == (502, "upstream_error")
    assert_safe(exc)


async def test_aclose_by_the_consumer_closes_the_upstream_connection(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(text([f" w{i}" for i in range(30)], gap=0.05))

    stream = provider.stream(request())
    first = await anext(stream)
    assert first == TextDelta(" w0")
    await stream.aclose()  # type: ignore[attr-defined]

    sent = await outcome(upstream.last)
    assert sent.disconnected and not sent.completed
    assert len(sent.chunk_times) < 30


async def test_breaking_out_of_the_loop_closes_the_upstream_connection(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(text([f" w{i}" for i in range(30)], gap=0.05))

    async for event in provider.stream(request()):
        if isinstance(event, TextDelta):
            break  # the abandoned generator is closed by the loop's async-generator hooks

    sent = await outcome(upstream.last)
    assert sent.disconnected and not sent.completed
    assert len(sent.chunk_times) < 30


# --------------------------------------------------------------------------- lifecycle


# The first loop ends without closing its client (as a Lambda invocation may): its idle
# keep-alive socket can only be reclaimed by the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_new_event_loop_gets_a_working_client(upstream: FakeUpstream) -> None:
    """Lambda runtimes and test runners may run each call on a fresh loop."""
    provider = OpenAIProvider(base_url=upstream.base_url, api_key=API_KEY, timeout_seconds=5)
    upstream.push(text("first"), text("second"))

    async def second_run() -> tuple[list[ProviderEvent], ApiError | None]:
        result = await collect(provider, request())
        await provider.aclose()
        return result

    first, exc1 = asyncio.run(collect(provider, request()))
    second, exc2 = asyncio.run(second_run())
    gc.collect()

    assert (exc1, exc2) == (None, None)
    assert texts(first) == ["first"]
    assert texts(second) == ["second"]


async def test_one_client_serves_many_requests_on_a_loop(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(text("a"), text("b"), text("c"))

    results = await asyncio.gather(*(collect(provider, request()) for _ in range(3)))

    assert sorted("".join(texts(events)) for events, _ in results) == ["a", "b", "c"]


def test_openai_is_not_imported_until_used() -> None:
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; import core.providers.openai_compat as m; "
        "m.OpenAIProvider(base_url='http://127.0.0.1:9/v1', api_key=None, timeout_seconds=1); "
        "assert 'openai' not in sys.modules, 'openai imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root / "src")}, check=True)


def test_repr_does_not_show_the_key() -> None:
    provider = OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key=API_KEY, timeout_seconds=1)
    assert API_KEY not in repr(provider)


# --------------------------------------------------------------------------- the fake itself


def test_fake_upstream_serves_models_and_plain_completions(upstream: FakeUpstream) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    models = httpx.get(f"{upstream.base_url}/models", headers=headers).json()
    assert [m["id"] for m in models["data"]] == ["gpt-4o-mini", "fake-model"]

    upstream.push(text("Plain answer", usage=(4, 2)))
    completion = httpx.post(
        f"{upstream.base_url}/chat/completions", headers=headers, json={"model": "fake-model", "messages": MESSAGES}
    ).json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "fake-model"
    assert completion["choices"][0]["message"]["content"] == "Plain answer"
    assert completion["usage"]["total_tokens"] == 6

    unauthorized = httpx.get(f"{upstream.base_url}/models")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "invalid_api_key"


def test_fake_upstream_streams_real_sse(upstream: FakeUpstream) -> None:
    upstream.push(text("a b", usage=(1, 2)))
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(
        f"{upstream.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"}, json=body
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["", "a", " b", None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


# --------------------------------------------------------------------------- buffered answers (`complete`)


async def complete(provider: OpenAIProvider, req: ModelRequest) -> tuple[list[ProviderEvent], ApiError | None]:
    try:
        return await provider.complete(req), None
    except ApiError as exc:
        return [], exc


async def test_a_buffered_answer_is_one_non_streamed_upstream_call(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(text(["Hello", " there"], usage=(9, 2)))

    events, exc = await complete(provider, request("fake-model", temperature=0.5, stream=True))

    assert exc is None
    assert events == [TextDelta("Hello there"), Finish("stop", Usage(prompt_tokens=9, completion_tokens=2))]
    sent = upstream.last.body
    # No event stream to parse for a client that waits for the whole answer anyway.
    assert sent["stream"] is False and "stream_options" not in sent
    assert (sent["model"], sent["messages"], sent["temperature"]) == ("fake-model", MESSAGES, 0.5)
    assert upstream.last.headers["authorization"] == f"Bearer {API_KEY}"


async def test_a_buffered_answer_keeps_tool_calls(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(tool_calls(ToolCall("get_weather", {"city": "Oslo"}, id="call_1"), ToolCall("get_time", "{}")))

    events, exc = await complete(provider, request(tools=WEATHER_TOOLS))

    assert exc is None
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        (0, "call_1", "get_weather", {"city": "Oslo"}),
        (1, "call_fake_1", "get_time", {}),
    ]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    assert upstream.last.body["tools"] == WEATHER_TOOLS


@pytest.mark.parametrize(
    ("reply", "status", "says"),
    [
        (error(429), 429, "rate limiting"),
        (error(503), 502, "failed"),
        (error(401), 502, "credentials"),
        (error(400, "Invalid value for 'temperature'."), 400, "rejected the request: Invalid value"),
        (raw({"choices": [{"index": 0, "delta": {"content": "a chunk"}}]}), 502, "failed"),
        (raw("<html>not json</html>"), 502, "failed"),
    ],
    ids=["429", "503", "401", "400", "not-a-completion", "not-json"],
)
async def test_a_buffered_answer_maps_upstream_failures(
    provider: OpenAIProvider, upstream: FakeUpstream, reply: object, status: int, says: str
) -> None:
    upstream.default_reply = reply  # type: ignore[assignment]  # every attempt, retries included

    events, exc = await complete(provider, request())

    assert events == []
    assert exc is not None and exc.status == status
    assert says in exc.message
    assert_safe(exc)


async def test_a_buffered_answer_is_retried_by_the_sdk(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(error(503), text("Recovered"))

    events, exc = await complete(provider, request())

    assert exc is None and events[0] == TextDelta("Recovered")
    assert len(upstream.chat_requests) == 2


async def test_a_buffered_answer_that_stalls_beyond_the_timeout_is_a_502(
    upstream: FakeUpstream, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider(timeout_seconds=1, max_retries=0)
    upstream.push(stall(10))

    started = time.monotonic()
    events, exc = await complete(provider, request())

    assert time.monotonic() - started < 3
    assert events == []
    assert exc is not None and exc.status == 502 and "timed out" in exc.message
    assert_safe(exc)
