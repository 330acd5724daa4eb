"""Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, LiteLLM, ...) through the official SDK.

Why the SDK: it already speaks the streaming protocol, retries 429/5xx with backoff
and maps HTTP failures to typed exceptions; this module only turns its chunks into
our `ProviderEvent`s and its exceptions into safe `ApiError`s.

`openai` is imported inside methods only (types come in under `TYPE_CHECKING`), so
deployments that run another provider, and the cold start of this one until its
first request, do not pay for importing the SDK.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from core.errors import ApiError, bad_request, provider_failed, rate_limited
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.chat import ChatCompletionChunk

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
        import openai

        client = self._get_client()
        options = {key: value for key, value in request.options.items() if key not in _RESERVED_ARGUMENTS}
        try:
            # Typed by hand: `**options` makes the SDK's overloads ambiguous to mypy.
            upstream: AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
                model=request.model,
                messages=cast(Any, request.messages),
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
        except openai.OpenAIError as exc:
            # `from None`: the SDK's exception (its text names URLs) must not ride along.
            raise _to_api_error(exc, mid_stream=False) from None

        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            async with upstream:
                async for chunk in upstream:
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
        except (openai.OpenAIError, ValueError) as exc:
            # ValueError: a chunk that is not JSON (a broken or non-compatible upstream).
            raise _to_api_error(exc, mid_stream=True) from None
        yield Finish(finish_reason or "stop", usage)


def _field(obj: Any, name: str) -> Any:
    """`obj.name` or `obj[name]`, None when missing: upstreams omit and null fields freely."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


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
