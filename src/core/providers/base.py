"""The interface every model provider implements.

A provider turns one `ModelRequest` (OpenAI-format messages, already windowed and
with the system prompt in front) into an async stream of small events. The chat
service builds both the streamed and the buffered answer from that one stream, so a
provider has a single method to get right.

Contract for implementations:
- yield `TextDelta` / `ToolCallDelta` events as soon as the model produces them
  (never batch), then exactly one `Finish`;
- raise `core.errors.ApiError` for every failure, already mapped to our statuses
  (429 stays 429, upstream 5xx, timeouts and dropped connections become 502, a
  request the model rejects is a 400); never let provider exception text reach it;
- import heavy client libraries inside the module that uses them, so a deployment
  pays at cold start only for the provider it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# Request fields that are forwarded to the model as they are (when not null).
PASSTHROUGH_OPTIONS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "reasoning_effort",
    "metadata",
    "service_tier",
)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's text."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of one tool call, in OpenAI's streaming shape.

    The first delta for an `index` carries `id` and `name`; later ones append to
    `arguments` (a JSON text delivered in fragments).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Finish:
    """The last event: why the model stopped (OpenAI's finish_reason) and the usage."""

    reason: str = "stop"
    usage: Usage | None = None


ProviderEvent = TextDelta | ToolCallDelta | Finish


@dataclass(frozen=True)
class ModelRequest:
    model: str
    """The provider's own model id (after the `MODELS` mapping)."""
    messages: list[dict[str, Any]]
    """OpenAI chat messages: system prompt first, then history, then the new input."""
    options: dict[str, Any] = field(default_factory=dict)
    """Non-null `PASSTHROUGH_OPTIONS` from the client's request."""


class ModelProvider(Protocol):
    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Run the model; yield deltas as they arrive, then one `Finish`."""
        ...


class BufferedModelProvider(ModelProvider, Protocol):
    """A provider with a cheaper non-streaming call (Bedrock's `Converse`), used for
    buffered answers; its events follow the same rules as `stream`'s."""

    async def complete(self, request: ModelRequest) -> list[ProviderEvent]: ...


async def run_to_end(provider: ModelProvider, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
    """Every event of one model call, for a buffered answer: the provider's
    non-streaming call where it has one, else its stream."""
    complete = getattr(provider, "complete", None)
    if complete is not None:
        for event in await complete(request):
            yield event
        return
    async for event in provider.stream(request):
        yield event
