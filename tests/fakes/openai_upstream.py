"""A real, scriptable OpenAI-compatible HTTP server for tests.

Why: the provider must be tested through the real `openai` SDK and real HTTP
(SSE framing, timeouts, dropped connections, retries, disconnects), which no
mock of the SDK can show. This is a small Starlette app served by uvicorn on
127.0.0.1 (a free port) in a background thread; nothing leaves the machine.

Quick start::

    from tests.fakes.openai_upstream import FakeUpstream, ToolCall, drop, error, stall, text, tool_calls

    with FakeUpstream() as upstream:              # started here, always stopped on exit
        upstream.push(text("Hello there, friend", chunks=3, gap=0.05))
        provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test")
        ...                                       # run the code under test
        sent = upstream.last                      # the last /v1/chat/completions request
        assert sent.body["model"] == "gpt-4o-mini"
        assert sent.headers["authorization"] == "Bearer sk-test"

As a pytest fixture (one server per module, clean script per test)::

    @pytest.fixture(scope="module")
    def upstream_server():
        with FakeUpstream() as server:
            yield server

    @pytest.fixture
    def upstream(upstream_server):
        upstream_server.reset()
        return upstream_server

`FakeUpstream(*, api_key=None, models=("gpt-4o-mini", "fake-model"), default_reply=None)`
    `api_key`: when set, requests without `Authorization: Bearer <api_key>` get an
    OpenAI-shaped 401 (and are recorded). `models`: what `GET /v1/models` lists.
    `default_reply`: what a chat request gets when the script is empty (default:
    `text("Hello from the fake upstream.")`); also a settable attribute.

Attributes and methods:
    `base_url`   "http://127.0.0.1:PORT/v1" (give this to the SDK / provider);
    `url`        "http://127.0.0.1:PORT"; `port`;
    `start()` / `stop()` (or use it as a context manager; `stop()` is idempotent);
    `push(*replies, times=1)`  queue scripted replies, consumed in order, one per
                 `POST /v1/chat/completions` (an SDK retry consumes the next one);
    `reset()`    empty the script and the recorded requests, restore the default reply;
    `requests`   every `RecordedRequest` received, in order (any path);
    `chat_requests`  only the `POST /v1/chat/completions` ones; `last` = the last of those;
    `wait_for_requests(count, timeout=5.0)`  block until `count` chat requests arrived.

`RecordedRequest` fields: `method`, `path`, `headers` (dict, lower-case names),
`body` (the parsed JSON, or None), `raw` (bytes), `reply` (the scripted reply used),
`received_at` (time.monotonic()), `chunk_times` (monotonic time each content /
tool-call chunk was handed to the server to send), `finished_at`, and the outcome
flags `completed` (whole response sent), `disconnected` (the client went away
before the end: the fake saw the disconnect), `dropped` (the fake aborted the
connection as scripted); `done` is a threading.Event set once the outcome is
known, `wait_done(timeout=5.0)` waits for it and returns the request.

Replies (build them with these functions):
    `text(content, *, chunks=None, gap=0.0, finish_reason="stop", usage=None, delay=0.0)`
        streams `content` as separate chunks: a str is split into words (each with
        its leading space) or, with `chunks=N`, into N nearly equal pieces; a
        sequence of str is sent piece by piece. `gap` seconds pass between pieces,
        `delay` seconds between the role chunk and the first piece (a model's time
        to first token). A non-streamed request with a `delay` gets its answer after
        the time the stream would have taken (`delay` plus the gaps).
        `usage=(prompt_tokens, completion_tokens)` overrides the computed usage.
    `tool_calls(*calls, gap=0.0, content=None, usage=None)` with
    `ToolCall(name, arguments, id=None, fragments=3)`: each call is streamed as a
        first chunk with its id and name, then its `arguments` (a str, or any JSON
        value, which is dumped) in `fragments` pieces; finish_reason "tool_calls".
    `error(status, message=None, *, type=None, code=None, param=None,
           retry_after_ms=1, should_retry=None, headers=None, raw_body=None)`
        an HTTP error with an OpenAI-shaped body `{"error": {message, type, param, code}}`
        (or `raw_body` verbatim). 429/5xx carry `retry-after-ms` so the SDK's own retries
        are quick (None leaves it out); `should_retry` sets `x-should-retry`.
    `stall(seconds=30.0, *, after=None)` sleep `seconds` before the response
        headers; with `after=[pieces]`, send the headers and those pieces first, then
        sleep (a stall mid-stream). Ends early when the client disconnects or on stop.
    `drop(content=("Partial", " answer"), *, gap=0.0)` stream those pieces, then
        abort the connection without the terminating chunk or `[DONE]`.
    `raw(*events, gap=0.0, done=True)` send each event verbatim as one SSE `data:`
        line (a dict is dumped as JSON, a str is sent as is), then `data: [DONE]`
        unless `done=False`; for odd or broken upstreams. A non-streamed request gets
        the first event as its body.

Streamed responses are real SSE (`data: {...}\\n\\n` ... `data: [DONE]\\n\\n`) of
`chat.completion.chunk` objects: a role chunk, the content / tool-call chunks, a
chunk with the finish_reason, and, when the request has
`stream_options.include_usage`, a usage chunk with `"choices": []`. Requests with
`"stream": false` get one `chat.completion` JSON object built from the same reply
(a `drop`, or a `stall(after=...)`, sends a truncated body and aborts instead).

Notes: the `openai` SDK retries 408/409/429/5xx and connection errors (2 retries by
default), so an error meant for every attempt goes in `default_reply` (or
`push(reply, times=3)`), and `len(upstream.chat_requests)` shows the retries. A
stall that runs its full time answers "Sorry for the wait." (before headers) or
ends the stream without a finish chunk (mid-stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "DropReply",
    "ErrorReply",
    "FakeUpstream",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "StallReply",
    "TextReply",
    "ToolCall",
    "ToolCallsReply",
    "drop",
    "error",
    "raw",
    "stall",
    "text",
    "tool_calls",
]

CHAT_PATH = "/v1/chat/completions"
_POLL_SECONDS = 0.02


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class TextReply:
    pieces: tuple[str, ...]
    gap: float = 0.0
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any = "{}"
    id: str | None = None
    fragments: int = 3

    @property
    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class ToolCallsReply:
    calls: tuple[ToolCall, ...]
    gap: float = 0.0
    content: str | None = None
    usage: tuple[int, int] | None = None


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    raw_body: str | None = None


@dataclass(frozen=True)
class StallReply:
    seconds: float = 30.0
    after: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DropReply:
    pieces: tuple[str, ...] = ("Partial", " answer")
    gap: float = 0.0


@dataclass(frozen=True)
class RawReply:
    events: tuple[Any, ...]
    gap: float = 0.0
    done: bool = True


Reply = TextReply | ToolCallsReply | ErrorReply | StallReply | DropReply | RawReply


def _split_words(content: str) -> tuple[str, ...]:
    words = content.split(" ")
    pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
    return tuple(piece for piece in pieces if piece)


def _split_even(content: str, count: int) -> tuple[str, ...]:
    size = max(1, math.ceil(len(content) / max(1, count)))
    return tuple(content[i : i + size] for i in range(0, len(content), size))


def _pieces(content: str | Sequence[str], chunks: int | None) -> tuple[str, ...]:
    if isinstance(content, str):
        return _split_even(content, chunks) if chunks else _split_words(content)
    return tuple(content)


def text(
    content: str | Sequence[str],
    *,
    chunks: int | None = None,
    gap: float = 0.0,
    finish_reason: str = "stop",
    usage: tuple[int, int] | None = None,
    delay: float = 0.0,
) -> TextReply:
    """A streamed text answer (see the module docstring)."""
    return TextReply(_pieces(content, chunks), gap=gap, finish_reason=finish_reason, usage=usage, delay=delay)


def tool_calls(
    *calls: ToolCall, gap: float = 0.0, content: str | None = None, usage: tuple[int, int] | None = None
) -> ToolCallsReply:
    """One or more tool calls, arguments streamed in fragments; finish_reason "tool_calls"."""
    if not calls:
        raise ValueError("tool_calls() needs at least one ToolCall")
    return ToolCallsReply(calls, gap=gap, content=content, usage=usage)


_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "permission_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    409: ("Conflict.", "invalid_request_error", None),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def error(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after_ms: float | None = 1,
    should_retry: bool | None = None,
    headers: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> ErrorReply:
    """An HTTP error with an OpenAI-shaped body (see the module docstring)."""
    default_message, default_type, default_code = _ERROR_DEFAULTS.get(
        status, ("Upstream error.", "server_error" if status >= 500 else "invalid_request_error", None)
    )
    all_headers = dict(headers or {})
    if retry_after_ms is not None and (status == 429 or status >= 500):
        all_headers.setdefault("retry-after-ms", str(retry_after_ms))
    if should_retry is not None:
        all_headers["x-should-retry"] = "true" if should_retry else "false"
    return ErrorReply(
        status=status,
        message=default_message if message is None else message,
        type=type or default_type,
        code=code if code is not None else default_code,
        param=param,
        headers=tuple(all_headers.items()),
        raw_body=raw_body,
    )


def stall(seconds: float = 30.0, *, after: str | Sequence[str] | None = None) -> StallReply:
    """No answer for `seconds` (before the headers, or mid-stream after `after`)."""
    return StallReply(seconds, None if after is None else _pieces(after, None))


def drop(content: str | Sequence[str] = ("Partial", " answer"), *, gap: float = 0.0) -> DropReply:
    """Stream `content`, then abort the connection mid-stream."""
    return DropReply(_pieces(content, None), gap=gap)


def raw(*events: Any, gap: float = 0.0, done: bool = True) -> RawReply:
    """SSE events sent verbatim (dicts as JSON), then `[DONE]` unless `done=False`."""
    return RawReply(events, gap=gap, done=done)


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    received_at: float
    reply: Reply | None = None
    chunk_times: list[float] = field(default_factory=list)
    finished_at: float | None = None
    completed: bool = False
    disconnected: bool = False
    dropped: bool = False
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options") if isinstance(self.body, dict) else None
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def wait_done(self, timeout: float = 5.0) -> RecordedRequest:
        """Wait until the response was fully sent, dropped, or the client went away."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"the fake upstream's response to {self.method} {self.path} did not finish")
        return self

    def _finish(self, **flags: bool) -> None:
        for name, value in flags.items():
            setattr(self, name, value)
        self.finished_at = time.monotonic()
        self.done.set()


class UpstreamDropped(Exception):
    """Raised inside a streaming body to make uvicorn abort the connection (scripted `drop`)."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for each scripted drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamDropped)


_QUIET_DROPS = _QuietDrops()


class _ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body generator when the client disconnects.

    Starlette only cancels the sending task; closing the generator here runs its
    `finally` at once, so the fake records the disconnect deterministically.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            if hasattr(body, "aclose"):
                await body.aclose()


# --------------------------------------------------------------------------- server


class FakeUpstream:
    """A scriptable OpenAI-compatible server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = ("gpt-4o-mini", "fake-model"),
        default_reply: Reply | None = None,
    ) -> None:
        self.api_key = api_key
        self.models = list(models)
        self._initial_default = default_reply or text("Hello from the fake upstream.")
        self.default_reply: Reply = self._initial_default
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.port = 0

    # ----- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FakeUpstream:
        """Bind a free port and serve in a background thread; returns self."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        logger = logging.getLogger("uvicorn.error")
        if _QUIET_DROPS not in logger.filters:
            logger.addFilter(_QUIET_DROPS)
        config = uvicorn.Config(
            self._app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=3,
        )
        self._stopping.clear()
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-openai-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake OpenAI upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving (ends stalls and streams in progress) and join the thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- scripting and inspection

    def push(self, *replies: Reply, times: int = 1) -> FakeUpstream:
        """Queue replies for the next chat requests, in order (each repeated `times`)."""
        with self._lock:
            for reply in replies:
                self._script.extend([reply] * times)
        return self

    def reset(self) -> None:
        """Forget the script and the recorded requests; restore the default reply."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.default_reply = self._initial_default

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.method == "POST" and r.path == CHAT_PATH]

    @property
    def last(self) -> RecordedRequest:
        chats = self.chat_requests
        if not chats:
            raise AssertionError("the fake upstream received no chat completion request")
        return chats[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.chat_requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} chat requests, got {len(self.chat_requests)}")
            time.sleep(0.005)
        return self.chat_requests

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default_reply

    # ----- the ASGI app

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(CHAT_PATH, self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(record)
        return record

    def _authorized(self, record: RecordedRequest) -> bool:
        return self.api_key is None or record.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: Request) -> Response:
        record = await self._record(request)
        if not self._authorized(record):
            record._finish(completed=True)
            return self._error_response(error(401))
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "fake-upstream"} for m in self.models]
        record._finish(completed=True)
        return JSONResponse({"object": "list", "data": data})

    async def _not_found(self, request: Request) -> Response:
        record = await self._record(request)
        record._finish(completed=True)
        return self._error_response(error(404, f"Unknown path {request.url.path}.", code="unknown_url"))

    async def _chat(self, request: Request) -> Response:
        record = await self._record(request)
        self._counter += 1
        completion_id = f"chatcmpl-fake-{self._counter}"
        headers = {"x-request-id": f"req_fake_{self._counter}", "openai-processing-ms": "1"}
        if not self._authorized(record):
            record.reply = error(401)
            record._finish(completed=True)
            return self._error_response(record.reply, headers)
        reply = self._next_reply()
        record.reply = reply
        if isinstance(reply, ErrorReply):
            record._finish(completed=True)
            return self._error_response(reply, headers)
        if isinstance(reply, StallReply) and reply.after is None:
            if not await self._pause(reply.seconds, request):
                record._finish(disconnected=not self._stopping.is_set())
                return Response(status_code=499)
            reply = text("Sorry for the wait.")
        if not record.stream:
            if isinstance(reply, TextReply) and reply.delay:
                # As long as the streamed answer would take, as a model's does.
                await self._pause(reply.delay + reply.gap * max(0, len(reply.pieces) - 1), request)
            return self._complete(record, reply, completion_id, headers)
        return _ClosingStreamingResponse(
            self._sse(record, reply, completion_id),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    async def _pause(self, seconds: float, request: Request | None = None) -> bool:
        """Sleep up to `seconds`; False if the client disconnected (or the server stops)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return False
            if request is not None and await request.is_disconnected():
                return False
            await asyncio.sleep(min(_POLL_SECONDS, remaining))
        return True

    @staticmethod
    def _error_response(reply: ErrorReply, extra_headers: dict[str, str] | None = None) -> Response:
        headers = {**(extra_headers or {}), **dict(reply.headers)}
        if reply.raw_body is not None:
            return Response(reply.raw_body, status_code=reply.status, headers=headers, media_type="text/plain")
        body = {"error": {"message": reply.message, "type": reply.type, "param": reply.param, "code": reply.code}}
        return JSONResponse(body, status_code=reply.status, headers=headers)

    @staticmethod
    def _prompt_tokens(record: RecordedRequest) -> int:
        messages = record.body.get("messages") if isinstance(record.body, dict) else None
        total = 0
        for message in messages if isinstance(messages, list) else []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                total += len(content.split())
            elif isinstance(content, list):
                total += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
        return total

    def _usage(self, record: RecordedRequest, override: tuple[int, int] | None, completion: int) -> dict[str, int]:
        prompt, completion = override or (self._prompt_tokens(record), completion)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _complete(self, record: RecordedRequest, reply: Reply, completion_id: str, headers: dict[str, str]) -> Response:
        """A non-streamed `chat.completion` for the same scripted reply."""
        model = record.body.get("model") if isinstance(record.body, dict) else None
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish_reason = "stop"
        count = 0
        if isinstance(reply, TextReply):
            message["content"] = "".join(reply.pieces)
            finish_reason = reply.finish_reason
            count = len(reply.pieces)
        elif isinstance(reply, ToolCallsReply):
            message["content"] = reply.content
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text},
                }
                for i, call in enumerate(reply.calls)
            ]
            finish_reason = "tool_calls"
            count = sum(call.fragments for call in reply.calls)
        elif isinstance(reply, (DropReply, StallReply)):
            # A non-streamed drop / late stall: headers promise more body than is sent.
            return _ClosingStreamingResponse(
                self._broken_body(record, reply),
                media_type="application/json",
                headers={**headers, "content-length": "100000"},
            )
        elif isinstance(reply, RawReply):
            record._finish(completed=True)
            first = reply.events[0] if reply.events else {}
            return Response(first if isinstance(first, str) else json.dumps(first), media_type="application/json")
        usage = reply.usage if isinstance(reply, (TextReply, ToolCallsReply)) else None
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": self._usage(record, usage, count),
        }
        record._finish(completed=True)
        return JSONResponse(body, headers=headers)

    async def _broken_body(self, record: RecordedRequest, reply: DropReply | StallReply) -> AsyncIterator[bytes]:
        try:
            yield b'{"id": "chatcmpl-broken", '
            if isinstance(reply, StallReply):
                await self._pause(reply.seconds)
            record.dropped = True
            raise UpstreamDropped
        except (asyncio.CancelledError, GeneratorExit):
            record.disconnected = not record.dropped
            raise
        finally:
            record._finish()

    async def _sse(self, record: RecordedRequest, reply: Reply, completion_id: str) -> AsyncIterator[bytes]:
        """The SSE body: chunks as the scripted reply says, then usage and [DONE]."""
        model = record.body.get("model") if isinstance(record.body, dict) else None
        created = int(time.time())

        def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
            }
            if record.include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n".encode()

        def sent() -> None:
            record.chunk_times.append(time.monotonic())

        try:
            if isinstance(reply, RawReply):
                for i, event in enumerate(reply.events):
                    if i and reply.gap and not await self._pause(reply.gap):
                        return
                    sent()
                    yield f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
                if reply.done:
                    yield b"data: [DONE]\n\n"
                record.completed = True
                return
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            finish_reason = "stop"
            usage_override: tuple[int, int] | None = None
            count = 0
            if isinstance(reply, (TextReply, DropReply, StallReply)):
                pieces = (reply.after or ()) if isinstance(reply, StallReply) else reply.pieces
                gap = reply.gap if isinstance(reply, (TextReply, DropReply)) else 0.0
                if isinstance(reply, TextReply) and reply.delay and not await self._pause(reply.delay):
                    return
                for i, piece in enumerate(pieces):
                    if i and gap and not await self._pause(gap):
                        return
                    sent()
                    yield chunk({"content": piece})
                count = len(pieces)
                if isinstance(reply, StallReply):
                    await self._pause(reply.seconds)
                    return  # the client timed out and left (or the server stops)
                if isinstance(reply, DropReply):
                    record.dropped = True
                    raise UpstreamDropped
                finish_reason = reply.finish_reason
                usage_override = reply.usage
            elif isinstance(reply, ToolCallsReply):
                if reply.content:
                    sent()
                    yield chunk({"content": reply.content})
                    count += 1
                first = True
                for index, call in enumerate(reply.calls):
                    if not first and reply.gap and not await self._pause(reply.gap):
                        return
                    first = False
                    opening = {
                        "index": index,
                        "id": call.id or f"call_fake_{self._counter}_{index}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                    sent()
                    yield chunk({"tool_calls": [opening]})
                    for fragment in _split_even(call.arguments_text, call.fragments):
                        if reply.gap and not await self._pause(reply.gap):
                            return
                        sent()
                        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                        count += 1
                finish_reason = "tool_calls"
                usage_override = reply.usage
            yield chunk({}, finish_reason)
            if record.include_usage:
                usage_chunk: dict[str, Any] = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": self._usage(record, usage_override, count),
                }
                yield f"data: {json.dumps(usage_chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            record.completed = True
        except (asyncio.CancelledError, GeneratorExit):
            record.disconnected = True
            raise
        finally:
            record._finish()
