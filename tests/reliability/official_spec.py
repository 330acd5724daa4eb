"""What the official OpenAI spec says an answer must look like, and where we knowingly differ.

`tests/reliability/test_fuzz_official_spec.py` generates requests from the pinned spec
(`tests/openai-openapi/openapi.json`) and checks every answer with `answer_problems`:
the documented schema for its status (2xx bodies, each `data:` payload of a stream,
error bodies), with the exceptions below, each with its reason. Nothing else in the
tests may quietly bend the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.schemas import spec, validate

OPERATIONS = [
    "createChatCompletion",
    "createResponse",
    "getResponse",
    "deleteResponse",
    "cancelResponse",
    "listInputItems",
    "listModels",
    "retrieveModel",
    "createConversation",
    "getConversation",
    "updateConversation",
    "deleteConversation",
    "listConversationItems",
    "createConversationItems",
    "getConversationItem",
    "deleteConversationItem",
]
"""The official operations Threadline serves (the fuzz test fails if the app routes one
of the spec's paths that is not listed here)."""

STREAM_SCHEMAS = {
    "createChatCompletion": "CreateChatCompletionStreamResponse",
    "createResponse": "ResponseStreamEvent",
    "getResponse": "ResponseStreamEvent",
}
"""What each `data:` payload of a streamed answer must be (the spec's text/event-stream
schema for the operation)."""


@dataclass(frozen=True)
class SpecException:
    schema: str | None
    """What we check instead (a components/schemas name), or None for our own check."""
    reason: str


SPEC_EXCEPTIONS: dict[tuple[str, int], SpecException] = {
    ("deleteResponse", 404): SpecException(
        "ErrorResponse",
        "The spec documents a bare `Error` for this one 404, while every other operation "
        'wraps it in `{"error": {...}}` (ErrorResponse), as the live API and the SDKs do '
        "(they read body['error']). Threadline answers the wrapped shape everywhere.",
    ),
    ("cancelResponse", 404): SpecException(
        "ErrorResponse",
        "As for deleteResponse: the spec documents a bare `Error` for this 404, while the live "
        'API and the SDKs use the wrapped `{"error": {...}}` shape everywhere.',
    ),
    ("deleteResponse", 200): SpecException(
        None,
        "The spec gives the 200 no schema at all; we check the body the live API sends "
        "(`{id, object: 'response', deleted: true}`, as its reference page shows) ourselves.",
    ),
}


def documented_schema(operation_id: str, status: int) -> str | None:
    """The components/schemas name the spec gives the operation's JSON answer for
    `status` (following a `components/responses` reference), or None."""
    document = spec()
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                response = operation.get("responses", {}).get(str(status))
                if response is None:
                    return None
                if "$ref" in response:
                    response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
                ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                return str(ref).rsplit("/", 1)[-1] if ref else None
    raise KeyError(operation_id)


def expected_schema(operation_id: str, status: int) -> str | None:
    """What an answer with `status` must match: the documented schema, the listed
    exception, or (an error the spec does not document) the spec's ErrorResponse."""
    exception = SPEC_EXCEPTIONS.get((operation_id, status))
    if exception is not None:
        return exception.schema
    documented = documented_schema(operation_id, status)
    if documented is None and status >= 400:
        return "ErrorResponse"
    return documented


def sse_payloads(text: str) -> list[str]:
    """The data of each SSE event (multi-line `data:` fields joined), comments dropped."""
    payloads: list[str] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            payloads.append("\n".join(data))
    return payloads


def check_answer(operation_id: str, status: int, content_type: str, body: bytes) -> None:
    """Assert the answer matches the official spec (with the listed exceptions)."""
    if content_type.startswith("text/event-stream"):
        assert status == 200, status
        payloads = sse_payloads(body.decode())
        assert payloads, "a stream without a single event"
        if operation_id == "createChatCompletion":
            assert payloads[-1] == "[DONE]", payloads[-3:]
            payloads = payloads[:-1]
        for payload in payloads:
            event = json.loads(payload)
            if operation_id == "createChatCompletion" and "error" in event:
                validate(event, "ErrorResponse")  # an error after the stream began
            else:
                validate(event, STREAM_SCHEMAS[operation_id])
        return
    assert content_type.startswith("application/json"), content_type
    data: Any = json.loads(body)
    schema = expected_schema(operation_id, status)
    if schema is not None:
        validate(data, schema)
    elif (operation_id, status) == ("deleteResponse", 200):
        assert data["object"] == "response" and data["deleted"] is True and isinstance(data["id"], str), data
    else:
        raise AssertionError(f"{operation_id} answered {status}, which the spec does not document")
