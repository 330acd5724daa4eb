"""Responses input items, tools and options, translated to the chat format providers speak.

The session (and every provider) keeps OpenAI chat messages, so a Responses request
is translated once, here:

- `input` as a string: one user message;
- message items (`{"role", "content"}`, with or without `"type": "message"`), roles
  user / system / developer / assistant, content a string or a list of
  `input_text` / `output_text` (and `input_image` with an `image_url`, `refusal`)
  parts;
- `function_call` items: an assistant message with `tool_calls` (consecutive calls,
  and a call right after an assistant message, merge into one message, the shape a
  model produced them in);
- `function_call_output` items: a `tool` message.

Anything else is a 400 naming the parameter (`input[2].type`, say).
"""

from __future__ import annotations

from typing import Any

from core.errors import ApiError, bad_request
from core.responses.wire import CreateResponseRequest

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
SUPPORTED_ITEMS = "message, function_call, function_call_output"


def _invalid(message: str, param: str) -> ApiError:
    return bad_request(message, param=param, code="invalid_value")


def _shown(value: Any) -> str:
    """A client's value quoted in an error message, cut short (it may be a huge object)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid value for '{param}': expected a string.", param)
    return value


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    """A message's content as chat content: a string, or chat content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"Invalid value for '{param}': expected a string or a list of content parts.", param)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise _invalid(f"Invalid value for '{where}': expected an object.", where)
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.text")})
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _text(part.get("refusal"), f"{where}.refusal")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _invalid(
                f"Invalid value for '{where}.type': {_shown(kind)} is not supported here; use input_text, "
                "output_text, refusal, or input_image with an image_url.",
                f"{where}.type",
            )
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _output_text(output: Any, param: str) -> str:
    """A function call's output: a string, or text parts joined."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise _invalid(
                    f"Invalid value for '{param}[{index}]': only text parts are supported in a function call output.",
                    f"{param}[{index}]",
                )
            texts.append(_text(part.get("text"), f"{param}[{index}].text"))
        return "".join(texts)
    raise _invalid(f"Invalid value for '{param}': expected a string.", param)


def input_messages(raw: str | list[Any] | None) -> list[dict[str, Any]]:
    """The request's `input` as chat messages (what the turn appends before the reply)."""
    if raw is None or raw == "" or raw == []:
        raise bad_request(
            "Missing required parameter: 'input'. Every turn needs new input, also one that continues "
            "a previous_response_id or a conversation: this server does not run the model on the history alone.",
            param="input",
            code="missing_required_parameter",
        )
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    messages: list[dict[str, Any]] = []
    merge_calls_into: dict[str, Any] | None = None  # the assistant message a function_call joins
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"Invalid value for '{where}': expected an object.", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in MESSAGE_ROLES:  # {} or [] is unhashable
                raise _invalid(
                    f"Invalid value for '{where}.role': {_shown(role)}; use user, system, developer or assistant.",
                    f"{where}.role",
                )
            if "content" not in item:
                raise bad_request(
                    f"Missing required parameter: '{where}.content'.",
                    param=f"{where}.content",
                    code="missing_required_parameter",
                )
            message = {"role": role, "content": _content(item["content"], f"{where}.content")}
            messages.append(message)
            merge_calls_into = message if role == "assistant" else None
        elif kind == "function_call":
            call = {
                "id": _text(item.get("call_id"), f"{where}.call_id"),
                "type": "function",
                "function": {
                    "name": _text(item.get("name"), f"{where}.name"),
                    "arguments": _text(item.get("arguments", ""), f"{where}.arguments"),
                },
            }
            if merge_calls_into is None:
                merge_calls_into = {"role": "assistant", "content": None}
                messages.append(merge_calls_into)
            merge_calls_into.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _text(item.get("call_id"), f"{where}.call_id"),
                    "content": _output_text(item.get("output"), f"{where}.output"),
                }
            )
            merge_calls_into = None
        else:
            raise _invalid(
                f"Invalid value for '{where}.type': {_shown(kind)} is not a supported input item type "
                f"(supported: {SUPPORTED_ITEMS}).",
                f"{where}.type",
            )
    for message in messages:
        if message["role"] == "assistant" and message.get("content") is None:
            del message["content"]  # tool calls only: stored without a null content
    return messages


# -- tools, options and what the Response object echoes ------------------------------------


def _function_tools(tools: list[Any] | None) -> list[dict[str, Any]]:
    """The request's tools, validated and in the Responses shape with every field the
    Response object shows."""
    normalized: list[dict[str, Any]] = []
    for index, tool in enumerate(tools or []):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid(f"Invalid value for '{where}': expected an object.", where)
        if tool.get("type") != "function":
            raise _invalid(
                f"Invalid value for '{where}.type': {_shown(tool.get('type'))}; only function tools are supported.",
                f"{where}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(
                f"Missing required parameter: '{where}.name'.", param=f"{where}.name", code="missing_required_parameter"
            )
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _invalid(
                f"Invalid value for '{where}.parameters': expected a JSON schema object.", f"{where}.parameters"
            )
        strict = tool.get("strict")
        normalized.append(
            {
                "type": "function",
                "name": name,
                "description": tool.get("description") if isinstance(tool.get("description"), str) else None,
                "parameters": parameters,
                "strict": strict if isinstance(strict, bool) else None,
            }
        )
    return normalized


def _chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    chat: list[dict[str, Any]] = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool["name"]}
        if tool["description"] is not None:
            function["description"] = tool["description"]
        function["parameters"] = tool["parameters"] if tool["parameters"] is not None else {"type": "object"}
        if tool["strict"] is not None:
            function["strict"] = tool["strict"]
        chat.append({"type": "function", "function": function})
    return chat


def _tool_choice(choice: str | dict[str, Any] | None) -> tuple[Any, Any]:
    """(what the Response echoes, what the chat model gets)."""
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _invalid(
                f"Invalid value for 'tool_choice': {_shown(choice)}; use auto, none or required.", "tool_choice"
            )
        return choice, choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "name": choice["name"]}, {"type": "function", "function": {"name": choice["name"]}}
    raise _invalid(
        "Invalid value for 'tool_choice': only auto, none, required or a function are supported.", "tool_choice"
    )


def _text_format(text: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the `text` the Response echoes, the chat `response_format`)."""
    if not text or text.get("format") is None:
        echoed = {"format": {"type": "text"}}
        if text and text.get("verbosity") is not None:
            echoed["verbosity"] = text["verbosity"]
        return echoed, None
    fmt = text["format"]
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return dict(text), None
    if kind == "json_object":
        return dict(text), {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _invalid("A json_schema text format needs a 'name' and a 'schema' object.", "text.format")
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if fmt.get(key) is not None}
        return dict(text), {"type": "json_schema", "json_schema": schema}
    raise _invalid(
        f"Invalid value for 'text.format.type': {_shown(kind)}; use text, json_object or json_schema.",
        "text.format.type",
    )


def echoed_parameters(request: CreateResponseRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the request parameters the Response object repeats, the provider options).

    Provider options use the chat names the providers understand: `max_output_tokens`
    becomes `max_tokens` (what every OpenAI-compatible server and Bedrock accept),
    function tools take the chat shape, `text.format` becomes `response_format` and
    `reasoning.effort` becomes `reasoning_effort`.
    """
    tools = _function_tools(request.tools)
    echoed_choice, chat_choice = _tool_choice(request.tool_choice)
    echoed_text, response_format = _text_format(request.text)
    reasoning = request.reasoning or {}
    echo: dict[str, Any] = {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "parallel_tool_calls": request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.safety_identifier,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": echoed_text,
        "tool_choice": echoed_choice,
        "tools": tools,
        "top_logprobs": request.top_logprobs,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
    }
    if request.user is not None:
        echo["user"] = request.user

    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        options["max_tokens"] = request.max_output_tokens
    if tools:
        options["tools"] = _chat_tools(tools)
        if chat_choice is not None:
            options["tool_choice"] = chat_choice
        if request.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = request.parallel_tool_calls
    if response_format is not None:
        options["response_format"] = response_format
    if isinstance(reasoning.get("effort"), str):
        options["reasoning_effort"] = reasoning["effort"]
    if request.user is not None:
        options["user"] = request.user
    return echo, options


def stored_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as kept in the session: no null fields."""
    return {name: value for name, value in reply.items() if value is not None}
