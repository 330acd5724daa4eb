"""Amazon Bedrock through the Converse streaming API (`ConverseStream`).

Converse gives every Bedrock model family one request and one event shape, so this
provider only has to translate OpenAI's chat format to Converse and the event
stream back. boto3 is synchronous: the call and every read of the event stream run
in a worker thread, so a slow model never blocks the event loop. boto3/botocore are
imported inside functions because loading them is a large share of a cold start,
which `echo` and `openai` deployments should not pay.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from core.errors import ApiError, bad_request, provider_failed, rate_limited
from core.providers.base import Finish, ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, Usage
from core.providers.echo import message_text

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

MODEL_THREADS = 100
"""Worker threads for Bedrock calls, apart from the event loop's default 40. A model
call holds its thread for as long as the model takes (a stream, between any two
events); on the shared pool, 40 of them would leave every DynamoDB call of every
other request waiting for the model."""
_model_threads: RunVar[anyio.CapacityLimiter] = RunVar("bedrock_model_threads")


def _model_limiter() -> anyio.CapacityLimiter:
    """One limiter per event loop (a RunVar): tests and Mangum may use several loops."""
    try:
        return _model_threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MODEL_THREADS)
        _model_threads.set(limiter)
        return limiter


# Converse `stopReason` -> OpenAI `finish_reason` (anything unknown is a plain stop).
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}

# Media types of inline images -> Converse `ImageFormat`.
_IMAGE_FORMATS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}

# Error codes (PascalCase; event-stream exceptions arrive camelCase and are normalised).
_RATE_LIMIT_CODES = frozenset({"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"})
_CONFIG_CODES = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
    }
)
CONFIG_ERROR_MESSAGE = (
    "The server's model provider configuration or permissions are wrong (model id, region or access); "
    "contact the service operator."
)
REJECTED_MESSAGE = "The model provider rejected the request."
_ARN = re.compile(r"arn:aws[\w-]*:\S+")


@functools.lru_cache(maxsize=1)
def get_bedrock_client() -> BaseClient:
    """The process-wide `bedrock-runtime` client.

    Building a client loads the service model and endpoint rules (slow), and a client
    keeps its connection pool, so warm invocations reuse both. A private
    `boto3.session.Session` keeps the first creation safe when it happens in a
    worker thread next to other boto3 users of the default session.
    """
    import boto3.session
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    config = Config(connect_timeout=5, read_timeout=300, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("bedrock-runtime", region_name=region, config=config)


# ---------------------------------------------------------------------------
# OpenAI request -> Converse request


def to_converse_request(request: ModelRequest) -> dict[str, Any]:
    """The `converse_stream` keyword arguments for an OpenAI-format request.

    Raises a 400 `ApiError` for input Converse cannot express, before any call.
    """
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = message_text(message)
            if text.strip():
                system.append({"text": text})
            continue
        if role == "user":
            converse_role, blocks = "user", _content_blocks(message)
        elif role == "assistant":
            converse_role, blocks = "assistant", _content_blocks(message) + _tool_uses(message)
        elif role == "tool":
            converse_role, blocks = "user", [_tool_result(message)]
        else:
            raise bad_request("Message roles must be system, developer, user, assistant or tool.", param="messages")
        if not blocks:
            continue  # Converse rejects empty messages; an empty turn carries nothing anyway.
        # Converse requires user/assistant alternation: merge runs of one role.
        if messages and messages[-1]["role"] == converse_role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": converse_role, "content": blocks})

    kwargs: dict[str, Any] = {"modelId": request.model, "messages": messages}
    if system:
        kwargs["system"] = system
    inference = _inference_config(request.options)
    if inference:
        kwargs["inferenceConfig"] = inference
    tool_config = _tool_config(request.options) or _history_tool_config(messages)
    if tool_config:
        kwargs["toolConfig"] = tool_config
    return kwargs


def _history_tool_config(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Converse rejects toolUse/toolResult blocks without a toolConfig. When a request
    brings none (no `tools`, or `tool_choice: "none"`) but its history has tool calls,
    declare the tools the history used, with an open schema, so it can still be sent."""
    names = sorted(
        {block["toolUse"]["name"] for message in messages for block in message["content"] if "toolUse" in block}
    )
    has_results = any("toolResult" in block for message in messages for block in message["content"])
    if not names and not has_results:
        return None
    names = names or ["tool"]
    return {"tools": [{"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object"}}}} for name in names]}


def _content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise bad_request("Message content must be a string or a list of content parts.", param="messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text.strip():  # Converse rejects blank text blocks
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise bad_request(
                "Only text and image_url content parts are supported by this model provider.", param="messages"
            )
    return blocks


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    """An inline `data:` image as Converse bytes; Converse cannot fetch URLs itself."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:"):
        raise bad_request(
            "Only inline data URLs (data:image/...;base64,...) are supported for images with this model provider.",
            param="messages",
        )
    header, comma, data = url[len("data:") :].partition(",")
    media_type, *parameters = header.split(";")
    if not comma or "base64" not in (p.strip().lower() for p in parameters):
        raise bad_request("Image data URLs must be base64-encoded.", param="messages")
    image_format = _IMAGE_FORMATS.get(media_type.strip().lower())
    if image_format is None:
        raise bad_request("Images must be PNG, JPEG, GIF or WebP.", param="messages")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("An image data URL is not valid base64.", param="messages") from None
    return {"image": {"format": image_format, "source": {"bytes": raw}}}


def _tool_uses(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request("tool_calls must be a list.", param="messages")
    blocks: list[dict[str, Any]] = []
    for item in calls:
        call: dict[str, Any] = item if isinstance(item, dict) else {}
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        call_id, name = call.get("id"), function.get("name")
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
            raise bad_request("Each assistant tool call needs an id and a function name.", param="messages")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            parsed: Any = arguments
        elif arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            parsed = {}
        else:
            try:
                parsed = json.loads(arguments)
            except (TypeError, ValueError):
                raise bad_request("Tool call arguments must be valid JSON.", param="messages") from None
        if not isinstance(parsed, dict):
            raise bad_request("Tool call arguments must be a JSON object.", param="messages")
        blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": parsed}})
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise bad_request("Tool messages need a tool_call_id.", param="messages")
    return {"toolResult": {"toolUseId": tool_call_id, "content": [{"text": message_text(message)}]}}


def _inference_config(options: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = options.get("max_completion_tokens", options.get("max_tokens"))
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if options.get("temperature") is not None:
        config["temperature"] = options["temperature"]
    if options.get("top_p") is not None:
        config["topP"] = options["top_p"]
    stop = options.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s]
    if stops:
        config["stopSequences"] = stops
    return config


def _tool_config(options: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI `tools`/`tool_choice` as a Converse `toolConfig`; None when there is nothing to send.

    Converse has no "none" choice, so `tool_choice="none"` leaves the tools out entirely.
    """
    tools = options.get("tools")
    choice = options.get("tool_choice")
    if not tools or choice == "none":
        return None
    if not isinstance(tools, list):
        raise bad_request("tools must be a list.", param="tools")
    specs: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise bad_request("Only function tools are supported by this model provider.", param="tools")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("Each tool needs a function name.", param="tools")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": name, "inputSchema": {"json": schema}}
        description = function.get("description")
        if isinstance(description, str) and description:
            spec["description"] = description
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice is None:
        pass
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    else:
        raise bad_request('tool_choice must be "none", "auto", "required" or a function choice.', param="tool_choice")
    return config


# ---------------------------------------------------------------------------
# Errors


def to_api_error(exc: BaseException) -> ApiError | None:
    """The client-facing error for a boto3/botocore/transport failure, or None if it is not one.

    Messages are ours (plus Bedrock's own validation text), never the exception's
    text, which can carry request ids, ARNs or endpoint details.
    """
    from botocore.eventstream import ParserError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        CredentialRetrievalError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )
    from urllib3.exceptions import HTTPError as Urllib3HTTPError

    if isinstance(exc, ClientError):  # also EventStreamError: exception events inside the stream
        error = exc.response.get("Error") or {}
        raw_code = str(error.get("Code") or "")
        code = raw_code[:1].upper() + raw_code[1:]
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        logger.warning("Bedrock ConverseStream failed: %s (HTTP %s)", code or "unknown error", status)
        if code in _RATE_LIMIT_CODES or (not code and status == 429):
            return rate_limited()
        if code == "ValidationException":
            detail = _ARN.sub("<arn>", str(error.get("Message") or "").strip())[:300]
            return bad_request(f"{REJECTED_MESSAGE} {detail}" if detail else REJECTED_MESSAGE)
        if code in _CONFIG_CODES:
            return provider_failed(CONFIG_ERROR_MESSAGE)
        return provider_failed()
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError | NoRegionError):
        logger.error("Bedrock client is not configured: %s", type(exc).__name__)
        return provider_failed(CONFIG_ERROR_MESSAGE)
    if isinstance(exc, ParamValidationError):
        logger.warning("Bedrock request failed client-side validation", exc_info=exc)
        return bad_request(REJECTED_MESSAGE)
    if isinstance(exc, BotoCoreError | Urllib3HTTPError | ParserError | OSError):
        # Connect/read timeouts, dropped connections, a corrupt event stream.
        logger.warning("Bedrock ConverseStream transport failure: %s", type(exc).__name__, exc_info=exc)
        return provider_failed()
    return None


# ---------------------------------------------------------------------------
# The provider


class BedrockProvider:
    """`ModelProvider` for Amazon Bedrock's ConverseStream."""

    name = "bedrock"

    def __init__(self, client: BaseClient | None = None) -> None:
        # Tests pass a stubbed client; production creates the shared one on first use.
        self._client = client

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        kwargs = to_converse_request(request)
        opened: list[Any] = []  # the EventStream, so `finally` can close it whatever happens
        exhausted = False

        def start() -> Iterator[dict[str, Any]]:
            client = self._client if self._client is not None else get_bedrock_client()
            response = client.converse_stream(**kwargs)
            opened.append(response["stream"])
            return iter(response["stream"])

        try:
            # Not abandoned on cancel: the call returns once headers arrive (usually
            # fast), and waiting for it lets `finally` close the stream it opened.
            events = await _guarded(anyio.to_thread.run_sync(start, limiter=_model_limiter()))

            def read() -> dict[str, Any] | None:
                return next(events, None)

            tool_index: dict[int, int] = {}  # Converse contentBlockIndex -> OpenAI tool-call index
            tool_has_arguments: set[int] = set()
            stop_reason: str | None = None
            usage: Usage | None = None
            while True:
                # Abandoned on cancel: a stalled model must not hold up a client that left;
                # `finally` closes the connection under the abandoned read.
                event = await _guarded(anyio.to_thread.run_sync(read, abandon_on_cancel=True, limiter=_model_limiter()))
                if event is None:
                    break
                if "contentBlockDelta" in event:
                    block = event["contentBlockDelta"]
                    delta = block.get("delta") or {}
                    position = tool_index.get(block.get("contentBlockIndex", -1))
                    if delta.get("text"):
                        yield TextDelta(delta["text"])
                    elif "toolUse" in delta and position is not None:
                        fragment = (delta["toolUse"] or {}).get("input") or ""
                        if fragment:
                            tool_has_arguments.add(position)
                            yield ToolCallDelta(position, arguments=fragment)
                elif "contentBlockStart" in event:
                    block = event["contentBlockStart"]
                    tool = (block.get("start") or {}).get("toolUse")
                    if tool:
                        position = len(tool_index)
                        tool_index[block.get("contentBlockIndex", -1)] = position
                        yield ToolCallDelta(position, id=tool.get("toolUseId"), name=tool.get("name"))
                elif "contentBlockStop" in event:
                    position = tool_index.get(event["contentBlockStop"].get("contentBlockIndex", -1))
                    if position is not None and position not in tool_has_arguments:
                        # A tool without parameters: OpenAI clients expect JSON, not "".
                        tool_has_arguments.add(position)
                        yield ToolCallDelta(position, arguments="{}")
                elif "messageStop" in event:
                    stop_reason = event["messageStop"].get("stopReason") or "end_turn"
                elif "metadata" in event:
                    counts = event["metadata"].get("usage") or {}
                    usage = Usage(
                        prompt_tokens=int(counts.get("inputTokens") or 0),
                        completion_tokens=int(counts.get("outputTokens") or 0),
                    )
            exhausted = True
            if stop_reason is None:
                # The stream ended without `messageStop`: a dropped connection.
                logger.warning("Bedrock event stream ended without messageStop")
                raise provider_failed()
            yield Finish(FINISH_REASONS.get(stop_reason, "stop"), usage)
        finally:
            if opened and not exhausted:
                # The consumer stopped early, was cancelled, or the stream failed:
                # release the HTTP connection instead of leaving the model talking.
                try:
                    opened[0].close()
                except Exception:  # closing is best effort
                    logger.debug("Closing the Bedrock event stream failed", exc_info=True)

    async def complete(self, request: ModelRequest) -> list[ProviderEvent]:
        """A buffered answer through `Converse`: one request, one response."""
        kwargs = to_converse_request(request)

        def call() -> dict[str, Any]:
            client = self._client if self._client is not None else get_bedrock_client()
            return dict(client.converse(**kwargs))

        # Abandoned on cancel: a client that left, or a server stopping, does not wait
        # for the model's whole answer (nothing is open to close on a buffered call).
        response = await _guarded(anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=_model_limiter()))
        events: list[ProviderEvent] = []
        tools = 0
        for block in ((response.get("output") or {}).get("message") or {}).get("content") or []:
            if block.get("text"):
                events.append(TextDelta(block["text"]))
            elif "toolUse" in block:
                tool = block["toolUse"] or {}
                arguments = json.dumps(tool.get("input") or {}, ensure_ascii=False)
                events.append(
                    ToolCallDelta(tools, id=tool.get("toolUseId"), name=tool.get("name"), arguments=arguments)
                )
                tools += 1
        counts = response.get("usage") or {}
        usage = Usage(
            prompt_tokens=int(counts.get("inputTokens") or 0), completion_tokens=int(counts.get("outputTokens") or 0)
        )
        events.append(Finish(FINISH_REASONS.get(response.get("stopReason") or "end_turn", "stop"), usage))
        return events


async def _guarded(call: Awaitable[_T]) -> _T:
    """Await a worker-thread call, mapping boto3/transport failures to `ApiError`."""
    try:
        return await call
    except ApiError:
        raise
    except Exception as exc:
        mapped = to_api_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
