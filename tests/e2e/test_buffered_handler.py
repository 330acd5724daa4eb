"""The buffered entry (`handler.lambda_buffered.handler`, Mangum) still serves every event
shape: it is the managed runtime's handler when the streaming wrapper is not used."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from handler.streaming.context import LambdaContext
from handler.streaming.runtime_api import Invocation
from tests.e2e.events import chat_body, rest_event, url_event


def context() -> Any:
    invocation = Invocation(
        request_id="buffered-1",
        deadline_ms=int((time.time() + 30) * 1000),
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:threadline-test",
        body=b"{}",
    )
    return LambdaContext(
        invocation, {"AWS_LAMBDA_FUNCTION_NAME": "threadline-test", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}
    )


def body_of(response: dict[str, Any]) -> str:
    body = response.get("body") or ""
    return base64.b64decode(body).decode() if response.get("isBase64Encoded") else str(body)


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def handler(local_table: tuple[Any, str], mangum_loop: None, monkeypatch: pytest.MonkeyPatch) -> Handler:
    """The module's Mangum handler around a fresh app (the module's own app keeps the
    service, and so the table, of the first test that used it), on an event loop of its own."""
    from handler import lambda_buffered
    from handler.app import create_app

    monkeypatch.setattr(lambda_buffered.handler, "app", create_app())
    return lambda_buffered.handler


def test_a_rest_event_streams_into_one_buffered_response(handler: Handler) -> None:
    response = handler(rest_event("POST", "/v1/chat/completions", chat_body("buffered please")), context())
    assert response["statusCode"] == 200
    headers = {name.lower(): value for name, value in response["headers"].items()}
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-hermes-session-id"]
    frames = [frame for frame in body_of(response).split("\n\n") if frame]
    assert frames[-1] == "data: [DONE]"
    text = "".join(
        json.loads(frame[len("data: ") :])["choices"][0]["delta"].get("content") or ""
        for frame in frames[:-1]
        if json.loads(frame[len("data: ") :])["choices"]
    )
    assert text == "Echo: buffered please (I was given 1 message.)"


def test_a_function_url_event_gets_a_buffered_json_answer(handler: Handler) -> None:
    response = handler(url_event("POST", "/v1/chat/completions", chat_body("hello", stream=False)), context())
    assert response["statusCode"] == 200
    answer = json.loads(body_of(response))
    assert answer["choices"][0]["message"]["content"] == "Echo: hello (I was given 1 message.)"
