"""BedrockProvider against a real botocore `bedrock-runtime` client, with no AWS endpoint.

How Bedrock is faked, and why:

- Stubber cannot express ConverseStream's successful output. Its response stub is
  validated against the output shape, where `stream` is a structure, so a list of
  events is rejected; a single dict passes validation but comes back as that plain
  dict rather than an iterable `EventStream`, so it would test nothing real.
- So successful streams (and some HTTP errors) use botocore's `before-send` hook:
  the request is built, validated, serialised and SigV4-signed (dummy credentials)
  by the real client, the hook captures the wire request and returns an
  `AWSResponse` whose body is a real binary `application/vnd.amazon.eventstream`
  stream (prelude, headers, JSON payload, CRCs, split into uneven chunks). botocore's
  own `EventStreamBuffer` and parser decode it, exactly as with a live response, and
  exception frames become the real `EventStreamError`.
- Error statuses use `Stubber.add_client_error` (the shape of every modelled error),
  plus a few raw HTTP error responses through the real error parser and retry logic.

The client under test is the production one from `get_bedrock_client()` (same
config, region from the environment), rebuilt for each test. A hook with an empty
queue fails the test instead of letting any request leave the process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber
from urllib3.exceptions import ProtocolError

from core.errors import ApiError
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage
from core.providers.bedrock import (
    CONFIG_ERROR_MESSAGE,
    REJECTED_MESSAGE,
    BedrockProvider,
    get_bedrock_client,
    to_converse_request,
)

MODEL = "amazon.nova-lite-v1:0"
SECRET = "SECRET-EXCEPTION-TEXT arn:aws:iam::123456789012:role/x req-0f00"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"

# ---------------------------------------------------------------------------
# The vnd.amazon.eventstream encoding (botocore only ships the decoder).


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude + CRC, string headers, payload, message CRC."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(event_type: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads payloads with a "p" member; the parser must ignore it.
    payload = json.dumps({**body, "p": "abcdefgh"}).encode()
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload)


def exception_event(exception_type: str, message: str) -> bytes:
    return frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )


def text(index: int, value: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": value}})


def start_tool(index: int, tool_use_id: str, name: str) -> bytes:
    return event(
        "contentBlockStart",
        {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}},
    )


def tool_input(index: int, fragment: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}})


def stop_block(index: int) -> bytes:
    return event("contentBlockStop", {"contentBlockIndex": index})


def message_start() -> bytes:
    return event("messageStart", {"role": "assistant"})


def message_stop(reason: str) -> bytes:
    return event("messageStop", {"stopReason": reason})


def metadata(inputs: int, outputs: int) -> bytes:
    usage = {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs}
    return event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})


class FakeRaw:
    """Stands in for urllib3's response: `stream()` yields bytes, `close()` is recorded.

    Items may also be a `threading.Event` (the read blocks until it is set, like a
    slow model) or an exception (raised mid-read, like a dropped connection).
    """

    def __init__(self, *items: bytes | threading.Event | BaseException, chunk: int = 13) -> None:
        self.items = items
        self.chunk = chunk
        self.closed = False
        self.gate_timed_out = False

    def stream(self, **_: Any) -> Iterator[bytes]:
        for item in self.items:
            if isinstance(item, threading.Event):
                if not item.wait(timeout=5):
                    self.gate_timed_out = True
            elif isinstance(item, BaseException):
                raise item
            else:
                for i in range(0, len(item), self.chunk):  # uneven chunks: frames straddle reads
                    yield item[i : i + self.chunk]

    def close(self) -> None:
        self.closed = True


def stream_response(raw: FakeRaw) -> AWSResponse:
    headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "req-1"}
    return AWSResponse("https://bedrock-runtime.us-east-1.amazonaws.com", 200, headers, raw)


def error_response(status: int, error_type: str, message: str) -> AWSResponse:
    headers = {
        "content-type": "application/json",
        "x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": "req-2",
    }
    return AWSResponse(
        "https://bedrock-runtime.us-east-1.amazonaws.com",
        status,
        headers,
        FakeRaw(json.dumps({"message": message}).encode()),
    )


class FakeBedrock:
    """A `before-send` hook: answers each ConverseStream request from a queue and keeps the requests."""

    def __init__(self, client: Any) -> None:
        self.responses: deque[AWSResponse | BaseException] = deque()
        self.requests: list[AWSPreparedRequest] = []
        client.meta.events.register("before-send.bedrock-runtime", self._send)

    def queue(self, *responses: AWSResponse | BaseException) -> None:
        self.responses.extend(responses)

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        self.requests.append(request)
        if not self.responses:
            raise AssertionError(f"unexpected request to Bedrock: {request.url}")
        response = self.responses.popleft()
        if isinstance(response, BaseException):
            raise response
        return response

    def body(self, position: int = -1) -> dict[str, Any]:
        body = self.requests[position].body
        assert isinstance(body, bytes)
        result: dict[str, Any] = json.loads(body)
        return result


# ---------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_PROFILE",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(aws_env: None) -> Iterator[Any]:
    get_bedrock_client.cache_clear()
    yield get_bedrock_client()
    get_bedrock_client.cache_clear()


@pytest.fixture
def bedrock(client: Any) -> FakeBedrock:
    return FakeBedrock(client)


def request(messages: list[dict[str, Any]] | None = None, **options: Any) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=messages or [{"role": "user", "content": "Hi"}], options=options)


async def collect(provider: BedrockProvider, model_request: ModelRequest) -> list[ProviderEvent]:
    return [item async for item in provider.stream(model_request)]


async def collect_until_error(
    provider: BedrockProvider, model_request: ModelRequest
) -> tuple[list[ProviderEvent], ApiError]:
    events: list[ProviderEvent] = []
    with pytest.raises(ApiError) as caught:
        async for item in provider.stream(model_request):
            events.append(item)
    return events, caught.value


def assert_safe(error: ApiError) -> None:
    """No exception text in what the client sees.

    The one exception by design: a ValidationException's own message (Bedrock's text
    about the request) follows our sentence, trimmed, with ARNs redacted.
    """
    message = error.message
    if error.status == 400:
        assert message.startswith(REJECTED_MESSAGE)
        message = message.replace("SECRET-EXCEPTION-TEXT <arn> req-0f00", "")
    for leaked in ("SECRET", "123456789012", "req-0f00", "arn:aws", "Traceback", "Error("):
        assert leaked not in message
        assert leaked not in json.dumps(error.body()).replace("SECRET-EXCEPTION-TEXT <arn> req-0f00", "")


# ---------------------------------------------------------------------------
# The request sent to Bedrock

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And this place?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        ],
    },
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "tooluse_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "tooluse_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "tooluse_1", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "unknown city"}]},
    {"role": "user", "content": "Thanks. Summarise."},
    {"role": "assistant", "content": ""},  # empty turns are dropped
]


async def test_request_sent_to_bedrock(bedrock: FakeBedrock, client: Any) -> None:
    bedrock.queue(stream_response(FakeRaw(message_start(), text(0, "ok"), stop_block(0), message_stop("end_turn"))))
    options = {
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,  # no Converse equivalent: ignored
        "user": "someone",
    }

    await collect(BedrockProvider(client=client), request(CONVERSATION, **options))

    [sent] = bedrock.requests
    assert sent.method == "POST"
    assert sent.url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse-stream"
    authorization = sent.headers["Authorization"]
    authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")  # signed by the real client
    assert bedrock.body() == {
        "system": [{"text": "You are terse."}, {"text": "Use metric units."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Weather in Paris?"},
                    {"text": "And this place?"},
                    {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "tooluse_2", "name": "get_weather", "input": {}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C, sunny"}]}},
                    {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "unknown city"}]}},
                    {"text": "Thanks. Summarise."},
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Current weather for a city.",
                        "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                    }
                }
            ],
            "toolChoice": {"auto": {}},
        },
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    options: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        options["tool_choice"] = choice
    config = to_converse_request(request(**options))["toolConfig"]
    assert config.get("toolChoice") == expected
    assert config["tools"][0]["toolSpec"]["name"] == "get_weather"


def test_tool_choice_none_leaves_tools_out() -> None:
    assert "toolConfig" not in to_converse_request(request(tools=[WEATHER_TOOL], tool_choice="none"))


def test_options_mapping() -> None:
    converse = to_converse_request(request(max_completion_tokens=50, max_tokens=10, stop=["a", "b"], seed=1))
    assert converse["inferenceConfig"] == {"maxTokens": 50, "stopSequences": ["a", "b"]}
    assert set(to_converse_request(request(seed=1, presence_penalty=0.5))) == {"modelId", "messages"}


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
            "Only inline data URLs",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}],
            "not valid base64",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}],
            "PNG, JPEG, GIF or WebP",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                    ],
                }
            ],
            "valid JSON",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}],
                }
            ],
            "JSON object",
        ),
        ([{"role": "tool", "content": "x"}], "tool_call_id"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "Only text and image_url"),
    ],
)
async def test_unconvertible_input_is_400_before_any_call(
    bedrock: FakeBedrock, client: Any, messages: list[dict[str, Any]], fragment: str
) -> None:
    _, error = await collect_until_error(BedrockProvider(client=client), request(messages))
    assert error.status == 400
    assert fragment in error.message
    assert bedrock.requests == []


# ---------------------------------------------------------------------------
# The stream that comes back


async def test_text_deltas_in_order_with_usage(bedrock: FakeBedrock, client: Any) -> None:
    bedrock.queue(
        stream_response(
            FakeRaw(
                message_start(),
                text(0, "Hel"),
                text(0, "lo, "),
                text(0, "world"),
                stop_block(0),
                message_stop("end_turn"),
                metadata(12, 3),
            )
        )
    )

    events = await collect(BedrockProvider(client=client), request())

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo, "),
        TextDelta("world"),
        Finish("stop", Usage(prompt_tokens=12, completion_tokens=3)),
    ]


async def test_tool_use_assembles_into_openai_tool_calls(bedrock: FakeBedrock, client: Any) -> None:
    bedrock.queue(
        stream_response(
            FakeRaw(
                message_start(),
                text(0, "Let me check."),
                stop_block(0),
                start_tool(1, "tooluse_abc", "get_weather"),
                tool_input(1, '{"ci'),
                tool_input(1, 'ty": "Par'),
                tool_input(1, 'is"}'),
                stop_block(1),
                start_tool(2, "tooluse_def", "get_time"),  # no parameters: no input deltas
                stop_block(2),
                message_stop("tool_use"),
                metadata(30, 25),
            )
        )
    )

    events = await collect(BedrockProvider(client=client), request(tools=[WEATHER_TOOL]))

    assert events[0] == TextDelta("Let me check.")
    assert events[1] == ToolCallDelta(0, id="tooluse_abc", name="get_weather")
    assert isinstance(events[-1], Finish)
    assert events[-1] == Finish("tool_calls", Usage(prompt_tokens=30, completion_tokens=25))
    # Assemble the way an OpenAI client does.
    calls: dict[int, dict[str, str]] = {}
    for item in events:
        if isinstance(item, ToolCallDelta):
            call = calls.setdefault(item.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = item.id or call["id"]
            call["name"] = item.name or call["name"]
            call["arguments"] += item.arguments
    assert calls == {
        0: {"id": "tooluse_abc", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "tooluse_def", "name": "get_time", "arguments": "{}"},
    }
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
async def test_finish_reasons(bedrock: FakeBedrock, client: Any, stop_reason: str, finish_reason: str) -> None:
    bedrock.queue(stream_response(FakeRaw(text(0, "x"), message_stop(stop_reason), metadata(1, 1))))
    events = await collect(BedrockProvider(client=client), request())
    assert [e for e in events if isinstance(e, Finish)] == [Finish(finish_reason, Usage(1, 1))]


async def test_exception_event_mid_stream_is_502_after_earlier_deltas(bedrock: FakeBedrock, client: Any) -> None:
    raw = FakeRaw(message_start(), text(0, "Hal"), text(0, "f"), exception_event("modelStreamErrorException", SECRET))
    bedrock.queue(stream_response(raw))

    events, error = await collect_until_error(BedrockProvider(client=client), request())

    assert events == [TextDelta("Hal"), TextDelta("f")]
    assert error.status == 502
    assert_safe(error)
    assert raw.closed


@pytest.mark.parametrize(
    ("exception_type", "status"),
    [
        ("internalServerException", 502),
        ("modelStreamErrorException", 502),
        ("serviceUnavailableException", 502),
        ("throttlingException", 429),
        ("validationException", 400),
    ],
)
async def test_exception_events_map_like_http_errors(
    bedrock: FakeBedrock, client: Any, exception_type: str, status: int
) -> None:
    bedrock.queue(stream_response(FakeRaw(text(0, "a"), exception_event(exception_type, "boom " + SECRET))))
    events, error = await collect_until_error(BedrockProvider(client=client), request())
    assert events == [TextDelta("a")]
    assert error.status == status
    assert_safe(error)


async def test_stream_ending_without_message_stop_is_502(bedrock: FakeBedrock, client: Any) -> None:
    bedrock.queue(stream_response(FakeRaw(text(0, "partial"))))
    events, error = await collect_until_error(BedrockProvider(client=client), request())
    assert events == [TextDelta("partial")]
    assert error.status == 502


async def test_dropped_connection_mid_stream_is_502(bedrock: FakeBedrock, client: Any) -> None:
    raw = FakeRaw(text(0, "a"), ProtocolError("Connection broken: " + SECRET))
    bedrock.queue(stream_response(raw))
    events, error = await collect_until_error(BedrockProvider(client=client), request())
    assert events == [TextDelta("a")]
    assert error.status == 502
    assert_safe(error)
    assert raw.closed


async def test_corrupt_frame_is_502(bedrock: FakeBedrock, client: Any) -> None:
    good = text(0, "a")
    broken = bytearray(text(0, "b"))
    broken[-1] ^= 0xFF  # bad message CRC
    bedrock.queue(stream_response(FakeRaw(good, bytes(broken))))
    events, error = await collect_until_error(BedrockProvider(client=client), request())
    assert events == [TextDelta("a")]
    assert error.status == 502


async def test_early_stop_by_consumer_closes_the_stream(bedrock: FakeBedrock, client: Any) -> None:
    raw = FakeRaw(text(0, "one"), text(0, "two"), text(0, "three"), message_stop("end_turn"))
    bedrock.queue(stream_response(raw))
    stream = cast(AsyncGenerator[ProviderEvent, None], BedrockProvider(client=client).stream(request()))

    first = await anext(stream)
    await stream.aclose()  # what `async for ...: break` and a disconnecting client lead to

    assert first == TextDelta("one")
    assert raw.closed


async def test_completed_stream_is_not_closed(bedrock: FakeBedrock, client: Any) -> None:
    # Closing a fully read urllib3 response would drop the keep-alive connection.
    raw = FakeRaw(text(0, "one"), message_stop("end_turn"))
    bedrock.queue(stream_response(raw))
    await collect(BedrockProvider(client=client), request())
    assert not raw.closed


async def test_reads_do_not_block_the_event_loop_and_cancel_closes(bedrock: FakeBedrock, client: Any) -> None:
    gate = threading.Event()
    raw = FakeRaw(text(0, "first"), gate, text(0, "second"), message_stop("end_turn"))
    bedrock.queue(stream_response(raw))
    received: list[ProviderEvent] = []
    got_first = asyncio.Event()

    async def consume() -> None:
        async for item in BedrockProvider(client=client).stream(request()):
            received.append(item)
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), timeout=5)
    # The worker thread is now blocked reading; the loop must still run us.
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)  # cancel does not wait for the stalled read
    assert raw.closed
    gate.set()  # release the abandoned worker thread
    assert not raw.gate_timed_out
    assert received == [TextDelta("first")]


async def test_streams_waiting_on_the_model_leave_threads_for_everything_else(
    bedrock: FakeBedrock, client: Any
) -> None:
    """45 streams stalled between two events (more than the event loop's 40 default
    worker threads): a DynamoDB call, or any other blocking call, still gets a thread
    at once instead of waiting for the model."""
    gate = threading.Event()
    streams = 45
    for _ in range(streams):
        bedrock.queue(stream_response(FakeRaw(text(0, "first"), gate, message_stop("end_turn"))))
    first = [asyncio.Event() for _ in range(streams)]

    async def consume(position: int) -> None:
        async for _ in BedrockProvider(client=client).stream(request()):
            first[position].set()

    tasks = [asyncio.create_task(consume(i)) for i in range(streams)]
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in first)), timeout=10)
        await asyncio.sleep(0.1)  # every stream is now blocked reading its next event
        assert await asyncio.wait_for(anyio.to_thread.run_sync(lambda: "stored"), timeout=2) == "stored"
    finally:
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_cancelled_buffered_answer_does_not_wait_for_the_model(client: Any) -> None:
    """A client that left, or a server stopping, cancels at once; the model's answer
    is not waited for (Converse runs for as long as the model writes)."""
    gate = threading.Event()

    def stall(**_: Any) -> None:
        gate.wait(timeout=5)
        raise EndpointConnectionError(endpoint_url="https://bedrock.invalid")

    client.meta.events.register("before-send.bedrock-runtime", stall)
    started = time.monotonic()
    try:
        # Cancelled the way the app cancels (an anyio cancel scope, as in a task group).
        with anyio.move_on_after(0.2):
            await BedrockProvider(client=client).complete(request())
        assert time.monotonic() - started < 2
    finally:
        gate.set()


async def test_slow_stream_delivers_each_delta_as_it_arrives(bedrock: FakeBedrock, client: Any) -> None:
    gate = threading.Event()
    bedrock.queue(stream_response(FakeRaw(text(0, "before"), gate, text(0, "after"), message_stop("end_turn"))))
    stream = BedrockProvider(client=client).stream(request())

    assert await asyncio.wait_for(anext(stream), timeout=5) == TextDelta("before")
    gate.set()
    assert [item async for item in stream] == [TextDelta("after"), Finish("stop", None)]


# ---------------------------------------------------------------------------
# Errors from the call itself


@pytest.mark.parametrize(
    ("code", "http_status", "status"),
    [
        ("ThrottlingException", 429, 429),
        ("ServiceQuotaExceededException", 400, 429),
        ("ValidationException", 400, 400),
        ("AccessDeniedException", 403, 502),
        ("ResourceNotFoundException", 404, 502),
        ("UnrecognizedClientException", 403, 502),
        ("ModelTimeoutException", 408, 502),
        ("ServiceUnavailableException", 503, 502),
        ("InternalServerException", 500, 502),
        ("ModelStreamErrorException", 424, 502),
        ("ModelNotReadyException", 429, 502),
        ("ModelErrorException", 424, 502),
    ],
)
async def test_client_errors_map_to_statuses(client: Any, code: str, http_status: int, status: int) -> None:
    with Stubber(client) as stubber:
        stubber.add_client_error("converse_stream", code, SECRET, http_status)
        _, error = await collect_until_error(BedrockProvider(client=client), request())
        stubber.assert_no_pending_responses()
    assert error.status == status
    assert_safe(error)
    if status == 429:
        assert error.code == "rate_limit_exceeded"
    elif status == 400:
        assert error.message.startswith(REJECTED_MESSAGE)
    elif code in ("AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"):
        assert error.message == CONFIG_ERROR_MESSAGE
    else:
        assert error.message == "The model provider failed to answer."


async def test_validation_message_is_passed_on_trimmed(client: Any) -> None:
    detail = "Malformed input request: maxTokens must be at most 5000. " + "x" * 400
    with Stubber(client) as stubber:
        stubber.add_client_error("converse_stream", "ValidationException", detail, 400)
        _, error = await collect_until_error(BedrockProvider(client=client), request())
    assert error.status == 400
    assert error.message.startswith(REJECTED_MESSAGE + " Malformed input request: maxTokens must be at most 5000.")
    assert len(error.message) <= len(REJECTED_MESSAGE) + 1 + 300


async def test_http_error_responses_through_the_real_parser(bedrock: FakeBedrock, client: Any) -> None:
    provider = BedrockProvider(client=client)
    bedrock.queue(error_response(400, "ValidationException", "The provided model identifier is invalid."))
    _, error = await collect_until_error(provider, request())
    assert (error.status, error.message) == (400, REJECTED_MESSAGE + " The provided model identifier is invalid.")

    bedrock.queue(error_response(403, "AccessDeniedException", SECRET))
    _, error = await collect_until_error(provider, request())
    assert (error.status, error.message) == (502, CONFIG_ERROR_MESSAGE)

    # 503 is retried by the client's standard retry mode, then mapped. botocore's
    # `max_attempts` counts retries: 3 means 4 attempts in all.
    bedrock.queue(*[error_response(503, "ServiceUnavailableException", SECRET) for _ in range(4)])
    _, error = await collect_until_error(provider, request())
    assert error.status == 502
    assert_safe(error)
    assert len(bedrock.requests) == 2 + 4


@pytest.mark.parametrize(
    "failure",
    [
        EndpointConnectionError(endpoint_url="https://" + SECRET),
        ConnectTimeoutError(endpoint_url="https://" + SECRET),
        ReadTimeoutError(endpoint_url="https://" + SECRET),
    ],
    ids=["endpoint-connection", "connect-timeout", "read-timeout"],
)
async def test_transport_failures_are_502(bedrock: FakeBedrock, client: Any, failure: Exception) -> None:
    bedrock.queue(failure, failure, failure, failure)  # retried like the real thing (4 attempts)
    _, error = await collect_until_error(BedrockProvider(client=client), request())
    assert error.status == 502
    assert error.message == "The model provider failed to answer."
    assert_safe(error)


async def test_missing_credentials_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    get_bedrock_client.cache_clear()
    try:
        client = get_bedrock_client()
        FakeBedrock(client)  # nothing queued: a request reaching the wire would fail the test
        _, error = await collect_until_error(BedrockProvider(client=client), request())
    finally:
        get_bedrock_client.cache_clear()
    assert (error.status, error.message) == (502, CONFIG_ERROR_MESSAGE)


# ---------------------------------------------------------------------------
# Client creation and cold start


def test_client_is_cached_and_configured(client: Any) -> None:
    assert get_bedrock_client() is client
    assert client.meta.region_name == "us-east-1"
    assert client.meta.service_model.service_name == "bedrock-runtime"
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 300)
    # botocore reads `max_attempts` as retries and derives the total.
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}


def test_region_comes_from_aws_default_region(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    get_bedrock_client.cache_clear()
    try:
        assert get_bedrock_client().meta.region_name == "eu-west-3"
    finally:
        get_bedrock_client.cache_clear()


async def test_default_provider_uses_the_shared_client(bedrock: FakeBedrock) -> None:
    bedrock.queue(stream_response(FakeRaw(text(0, "hi"), message_stop("end_turn"))))
    assert await collect(BedrockProvider(), request()) == [TextDelta("hi"), Finish("stop", None)]
    assert BedrockProvider.name == "bedrock"


def test_importing_the_module_does_not_import_boto3() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys, core.providers.bedrock; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_a_history_with_tool_calls_still_declares_its_tools_when_the_request_has_none() -> None:
    from core.providers.bedrock import to_converse_request

    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks, and tomorrow?"},
    ]
    without_tools = to_converse_request(ModelRequest(model="m", messages=history))
    assert without_tools["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]
    }
    plain = to_converse_request(ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}]))
    assert "toolConfig" not in plain


# ---------------------------------------------------------------------------
# Buffered answers through Converse (Stubber can express its plain JSON output)


async def test_a_buffered_answer_uses_converse(client: Any) -> None:
    weather_tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with Stubber(client) as stubber:
        stubber.add_response(
            "converse",
            {
                "output": {
                    "message": {
                        "role": "assistant",
                        "content": [
                            {"text": "Let me check."},
                            {"toolUse": {"toolUseId": "tu-1", "name": "get_weather", "input": {"city": "Oslo"}}},
                        ],
                    }
                },
                "stopReason": "tool_use",
                "usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
                "metrics": {"latencyMs": 5},
            },
            {
                "modelId": MODEL,
                "messages": [{"role": "user", "content": [{"text": "Weather in Oslo?"}]}],
                "toolConfig": {
                    "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]
                },
            },
        )
        events = await BedrockProvider(client=client).complete(
            request([{"role": "user", "content": "Weather in Oslo?"}], tools=[weather_tool])
        )
        stubber.assert_no_pending_responses()
    assert events == [
        TextDelta("Let me check."),
        ToolCallDelta(0, id="tu-1", name="get_weather", arguments='{"city": "Oslo"}'),
        Finish("tool_calls", Usage(prompt_tokens=12, completion_tokens=7)),
    ]


async def test_converse_errors_map_like_the_stream(client: Any) -> None:
    with Stubber(client) as stubber:
        stubber.add_client_error("converse", "ThrottlingException", SECRET, 429)
        with pytest.raises(ApiError) as caught:
            await BedrockProvider(client=client).complete(request())
    assert caught.value.status == 429
    assert_safe(caught.value)
