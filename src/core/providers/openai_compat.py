"""Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, LiteLLM, ...) through the official SDK.

Why the SDK: it holds the connection pool, retries 408/409/429/5xx and connection
errors with backoff, and maps HTTP failures to typed exceptions; this module only
turns the upstream's chunks into our `ProviderEvent`s and the SDK's exceptions into
safe `ApiError`s. It sends through the SDK client's `post` with a body that is
already JSON, and reads the stream's events as plain JSON, rather than through
`chat.completions.create` (see `_send` for why). A client that asked for no stream
gets a non-streamed upstream call (`complete`).

`openai` is imported inside methods only (types come in under `TYPE_CHECKING`), so
deployments that run another provider, and the cold start of this one until its
first request, do not pay for importing the SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from core.errors import ApiError, bad_request, provider_failed, rate_limited
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

# Local upstreams (Ollama, vLLM) need no key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "unused"
# How much of an upstream's own rejection message a client gets to see.
MAX_UPSTREAM_MESSAGE_CHARS = 300
# Arguments this module owns; a stray option must not override or duplicate them.
_RESERVED_ARGUMENTS = frozenset({"model", "messages", "stream", "stream_options"})
# An upstream error `code` is passed on only if it looks like an identifier.
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class OpenAIProvider:
    """Streams chat completions from an OpenAI-compatible `/v1/chat/completions`."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_seconds: float = 600,
        max_retries: int = 2,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key or PLACEHOLDER_API_KEY
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self._client: AsyncOpenAI | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        # Never show the key.
        return f"OpenAIProvider(base_url={self.base_url!r}, timeout_seconds={self.timeout_seconds!r})"

    def _get_client(self) -> AsyncOpenAI:
        """The SDK client for the running loop, created on first use.

        The client's connection pool belongs to the event loop it was first used on;
        Lambda runtimes and tests may run later calls on a new loop, which then gets
        a new client (the old one dies with its loop).
        """
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is None or self._client_loop() is not loop:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout_seconds,
                max_retries=self.max_retries,
                # Our own HTTP client (same defaults as the SDK's): the SDK's default one
                # closes itself, when dropped, on whatever loop is running then, which
                # fails for connections that belonged to an earlier, closed loop.
                http_client=DefaultAsyncHttpxClient(timeout=self.timeout_seconds),
            )
            self._client_loop = weakref.ref(loop)
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client (its pooled connections) if it belongs to the running loop.

        For runtimes and tests that end an event loop on purpose; otherwise the pool
        lives as long as the provider (connection reuse across requests is the point).
        """
        client, owner = self._client, self._client_loop
        self._client = None
        self._client_loop = None
        if client is not None and owner is not None and owner() is asyncio.get_running_loop():
            await client.close()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Yield each text / tool-call delta as the upstream sends it, then one `Finish`.

        The upstream response is closed when this generator is closed early, so a
        client that goes away stops the (billed) upstream generation too.
        """
        response = await self._send(request, stream=True)
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            async for chunk in _chunks(response):
                chunk_usage = _field(chunk, "usage")
                if chunk_usage is not None:
                    usage = _usage(chunk_usage)
                for choice in _items(_field(chunk, "choices")):
                    index = _field(choice, "index")
                    if isinstance(index, int) and index != 0:
                        continue  # we never ask for n > 1
                    reason = _field(choice, "finish_reason")
                    if isinstance(reason, str) and reason:
                        finish_reason = reason
                    delta = _field(choice, "delta")
                    if delta is None:
                        continue
                    content = _field(delta, "content")
                    if isinstance(content, str) and content:
                        yield TextDelta(content)
                    for position, call in enumerate(_items(_field(delta, "tool_calls"))):
                        event = _tool_call_delta(call, position)
                        if event is not None:
                            yield event
        finally:
            await response.aclose()
        yield Finish(finish_reason or "stop", usage)

    async def complete(self, request: ModelRequest) -> list[ProviderEvent]:
        """The whole answer in one non-streamed call, for a client that asked for no stream:
        one JSON body instead of an event per token, the same events as `stream` gives."""
        response = await self._send(request, stream=False)
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise _to_api_error(exc, mid_stream=False) from None
        choice = _first_choice(body)
        message = _field(choice, "message")
        if not isinstance(message, Mapping):
            # Not a chat completion (a chunk, an error object, something else): no answer to keep.
            raise _to_api_error(ValueError("no message in the completion"), mid_stream=True)
        events: list[ProviderEvent] = []
        content = _field(message, "content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        for position, call in enumerate(_items(_field(message, "tool_calls"))):
            event = _tool_call_delta(call, position)
            if event is not None:
                events.append(event)
        reason = _field(choice, "finish_reason")
        finish_reason = reason if isinstance(reason, str) and reason else None
        raw_usage = _field(body, "usage")
        events.append(Finish(finish_reason or "stop", _usage(raw_usage) if raw_usage is not None else None))
        return events

    async def _send(self, request: ModelRequest, *, stream: bool) -> httpx2.Response:
        """POST the request through the SDK client, its body already JSON.

        Why not `chat.completions.create`: it runs `maybe_transform` over every message
        (about 5 ms of CPU for a window of 40, on every turn) and makes a pydantic model
        of every streamed chunk, work this service does not need: its messages are JSON
        already, and it reads a handful of fields per chunk. `client.post` keeps what
        the SDK is for: the connection pool, the key, timeouts, the retries of 408, 409,
        429, 5xx and connection errors, and its typed status errors. (`httpx2` is the
        HTTP library the SDK is built on, one of its own requirements.)
        """
        import httpx2
        import openai

        client = self._get_client()
        try:
            return await client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=_payload(request, stream=stream),
                options={"headers": {"Content-Type": "application/json"}},
                stream=stream,
            )
        except openai.OpenAIError as exc:
            # `from None`: the SDK's exception (its text names URLs) must not ride along.
            raise _to_api_error(exc, mid_stream=False) from None


def _payload(request: ModelRequest, *, stream: bool) -> bytes:
    """The upstream request body: the client's options, then the fields this module owns."""
    body = {key: value for key, value in request.options.items() if key not in _RESERVED_ARGUMENTS}
    body |= {"model": request.model, "messages": request.messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def _chunks(response: httpx2.Response) -> AsyncIterator[Any]:
    """The JSON of each server-sent event of a chat completion stream, up to `[DONE]`.

    Failures are mapped as the SDK's own stream maps them: a timeout or a lost
    connection, an error event, or data that is not JSON become 502s.
    """
    import httpx2
    import openai

    data: list[str] = []
    event: str | None = None
    try:
        async for line in response.aiter_lines():
            if line:
                field_name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field_name == "data":
                    data.append(value)
                elif field_name == "event":
                    event = value
                continue
            if not data:
                event = None
                continue
            text = "\n".join(data)
            data, kind, event = [], event, None
            if text.startswith("[DONE]"):
                return
            chunk = json.loads(text)
            error = chunk.get("error") if isinstance(chunk, Mapping) else None
            if error or kind == "error":
                raise openai.APIError("error event in the stream", response.request, body=error)
            yield chunk
    except httpx2.TimeoutException:
        raise _to_api_error(openai.APITimeoutError(request=response.request), mid_stream=True) from None
    except httpx2.TransportError:
        raise _to_api_error(openai.APIConnectionError(request=response.request), mid_stream=True) from None
    except (openai.OpenAIError, ValueError) as exc:
        # ValueError: a chunk that is not JSON (a broken or non-compatible upstream).
        raise _to_api_error(exc, mid_stream=True) from None


def _field(obj: Any, name: str) -> Any:
    """`obj.name` or `obj[name]`, None when missing: upstreams omit and null fields freely."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _first_choice(body: Any) -> Any:
    """The choice with index 0 (we never ask for n > 1), or None."""
    for choice in _items(_field(body, "choices")):
        index = _field(choice, "index")
        if not isinstance(index, int) or index == 0:
            return choice
    return None


def _items(value: Any) -> list[Any]:
    """A list field, or nothing when it is missing, null or not a list."""
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(raw: Any) -> Usage:
    return Usage(
        prompt_tokens=_count(_field(raw, "prompt_tokens")),
        completion_tokens=_count(_field(raw, "completion_tokens")),
    )


def _tool_call_delta(call: Any, position: int) -> ToolCallDelta | None:
    """One streamed tool-call fragment, or None when it carries nothing."""
    index = _field(call, "index")
    call_id = _field(call, "id")
    function = _field(call, "function")
    name = _field(function, "name")
    arguments = _field(function, "arguments")
    event = ToolCallDelta(
        index=index if isinstance(index, int) and not isinstance(index, bool) else position,
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=name if isinstance(name, str) and name else None,
        arguments=arguments if isinstance(arguments, str) else "",
    )
    if event.id is None and event.name is None and not event.arguments:
        return None
    return event


def _upstream_error(body: object) -> Mapping[str, Any] | None:
    """The `{"message", "type", "param", "code"}` object of an upstream error body."""
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error")
    if isinstance(inner, Mapping):
        return cast(Mapping[str, Any], inner)
    return cast(Mapping[str, Any], body)


def _rejection(body: object) -> ApiError:
    """A 400 that passes on the upstream's own (truncated) explanation, never our exception text."""
    error = _upstream_error(body)
    message = error.get("message") if error is not None else None
    code = error.get("code") if error is not None else None
    param = error.get("param") if error is not None else None
    detail = " ".join(message.split())[:MAX_UPSTREAM_MESSAGE_CHARS].rstrip() if isinstance(message, str) else ""
    return bad_request(
        f"The model provider rejected the request: {detail}" if detail else "The model provider rejected the request.",
        code=code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None,
        param=param if isinstance(param, str) and _SAFE_CODE.fullmatch(param) else None,
    )


def _to_api_error(exc: Exception, *, mid_stream: bool) -> ApiError:
    """Map an SDK failure to the status a client of ours should see, with a safe message."""
    import openai

    status = getattr(exc, "status_code", None)
    # Operators get the kind of failure and the upstream request id, not its text.
    logger.warning(
        "model provider call failed: %s status=%s request_id=%s mid_stream=%s",
        type(exc).__name__,
        status,
        getattr(exc, "request_id", None),
        mid_stream,
    )
    if isinstance(exc, openai.APITimeoutError):
        return provider_failed("The model provider timed out.")
    if isinstance(exc, openai.APIConnectionError):
        if mid_stream:
            return provider_failed("The connection to the model provider was lost while it was answering.")
        return provider_failed("Could not connect to the model provider.")
    if isinstance(exc, openai.RateLimitError):
        return rate_limited()
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return provider_failed()
        if exc.status_code in (401, 403):
            return provider_failed("The model provider rejected the server's credentials.")
        if exc.status_code in (400, 404, 413, 422):
            return _rejection(exc.body)
        return provider_failed()
    if mid_stream:
        return provider_failed("The model provider failed while answering.")
    return provider_failed()
