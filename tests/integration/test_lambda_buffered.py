"""The buffered Lambda entry (Mangum) on the sample events in `events/`, as a user sees it.

Every sample event goes through the real `handler.lambda_buffered.handler` against moto:
API Gateway REST (payload 1.0), HTTP API (payload 2.0) and Function URL events, each a
chat turn, a continued session, a streamed turn (buffered by Mangum), the model list and
a bad request. One more test runs `python -m devtools.invoke` (what `make invoke` runs)
as a subprocess against the session's DynamoDB Local.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import table_items
from tests.schemas import validate

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = ROOT / "events"
SOURCES = ("rest", "http", "url")
KINDS = ("chat", "continue", "stream", "models", "bad-request")
EVENT_FILES = sorted(EVENTS_DIR.glob("*.json"))
SESSION_HEADER = "x-hermes-session-id"
VALID_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ERROR_KEYS = {"message", "type", "param", "code"}

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


# -- helpers -----------------------------------------------------------------------


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    return event


def source_and_kind(path: Path) -> tuple[str, str]:
    source, _, kind = path.stem.partition("-")
    return source, kind


def headers_of(response: dict[str, Any]) -> dict[str, list[str]]:
    """Response headers by lower-case name: REST (1.0) responses may carry them in
    `headers` and/or `multiValueHeaders`, payload 2.0 responses in `headers` only."""
    merged: dict[str, list[str]] = {}
    for name, value in (response.get("headers") or {}).items():
        merged.setdefault(name.lower(), []).append(value)
    for name, values in (response.get("multiValueHeaders") or {}).items():
        merged.setdefault(name.lower(), []).extend(values)
    return merged


def header(response: dict[str, Any], name: str) -> str | None:
    values = headers_of(response).get(name.lower())
    return values[0] if values else None


def request_header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def with_session(event: dict[str, Any], session_id: str) -> dict[str, Any]:
    """The event with its X-Hermes-Session-Id header set to `session_id`, wherever the
    source keeps headers (REST: `headers` and `multiValueHeaders`)."""
    event = copy.deepcopy(event)
    for field, value in (("headers", session_id), ("multiValueHeaders", [session_id])):
        headers = event.get(field)
        if headers is None:
            continue
        name = next((key for key in headers if key.lower() == SESSION_HEADER), None)
        if name is None:
            name = "x-hermes-session-id" if event.get("version") == "2.0" else "X-Hermes-Session-Id"
        headers[name] = value
    return event


def body_text(response: dict[str, Any]) -> str:
    assert response["isBase64Encoded"] is False, "a text body must not come back base64-encoded"
    return str(response.get("body") or "")


def json_body(response: dict[str, Any]) -> Any:
    assert "application/json" in (header(response, "content-type") or "")
    return json.loads(body_text(response))


def sse_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body, after checking its framing ends with [DONE]."""
    assert (header(response, "content-type") or "").startswith("text/event-stream")
    text = body_text(response)
    assert text.endswith("\n\n"), "every SSE frame ends with a blank line"
    frames = [frame for frame in text.split("\n\n") if frame]
    assert frames[-1] == "data: [DONE]"
    chunks: list[dict[str, Any]] = []
    for frame in frames[:-1]:
        if frame.startswith(":"):
            continue  # a keepalive comment
        assert frame.startswith("data: ") and "\n" not in frame, f"unexpected SSE frame: {frame!r}"
        chunks.append(json.loads(frame.removeprefix("data: ")))
    return chunks


def reply_text(response: dict[str, Any]) -> str:
    if (header(response, "content-type") or "").startswith("text/event-stream"):
        return "".join(
            choice["delta"].get("content") or "" for chunk in sse_chunks(response) for choice in chunk["choices"]
        )
    return str(json_body(response)["choices"][0]["message"]["content"])


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def invoke(moto_table: tuple[Any, str], mangum_loop: None, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Call the real Lambda handler on an event, with a fake Lambda context.

    The Mangum adapter is the module's own (its configuration is under test), but the
    FastAPI app it wraps is a fresh one: the module's app builds its service (and
    DynamoDB client) once per process, as a warm Lambda should, and this test's moto
    table must not be served by a client left over from another test.
    """
    from devtools.invoke import FakeLambdaContext
    from handler import lambda_buffered
    from handler.app import create_app

    monkeypatch.setattr(lambda_buffered.handler, "app", create_app())

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = lambda_buffered.handler(copy.deepcopy(event), FakeLambdaContext())  # type: ignore[arg-type]
        assert isinstance(response.get("statusCode"), int), response
        return response

    return call


# -- the samples themselves --------------------------------------------------------


def test_every_source_has_every_sample() -> None:
    names = {path.stem for path in EVENT_FILES}
    missing = {f"{source}-{kind}" for source in SOURCES for kind in KINDS} - names
    assert not missing, f"sample events missing from events/: {sorted(missing)}"


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.stem)
def test_sample_looks_like_what_aws_sends(path: Path) -> None:
    from mangum.handlers import APIGateway, HTTPGateway

    from devtools.invoke import FakeLambdaContext
    from handler.lambda_buffered import handler

    event = json.loads(path.read_text())
    source, kind = source_and_kind(path)
    assert event["isBase64Encoded"] is False
    body = event.get("body")
    assert body is None or isinstance(body, str), "bodies are JSON strings"
    inferred = handler.infer(event, FakeLambdaContext())  # type: ignore[arg-type]
    if source == "rest":
        assert isinstance(inferred, APIGateway)
        assert event["requestContext"]["stage"] == "prod"
        assert event["requestContext"]["accountId"] == "123456789012"
        assert event["requestContext"]["path"] == f"/prod{event['path']}"
        assert set(event["multiValueHeaders"]) == set(event["headers"])
    else:
        assert isinstance(inferred, HTTPGateway)
        assert event["version"] == "2.0" and event["routeKey"] == "$default"
        assert event["rawPath"] == event["requestContext"]["http"]["path"]
        assert all(name == name.lower() for name in event["headers"]), "payload 2.0 header names are lower case"
        domain = event["requestContext"]["domainName"]
        assert (".lambda-url." in domain) == (source == "url")
        if body is not None:
            assert int(event["headers"]["content-length"]) == len(body.encode())
    if kind in ("chat", "continue", "stream"):
        validate(json.loads(str(body)), "CreateChatCompletionRequest")
        assert json.loads(str(body))["model"] == "echo"
    if kind == "continue":
        assert request_header(event, SESSION_HEADER) == "demo-session-1"


# -- through the handler -----------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.stem)
def test_event_gives_what_a_client_expects(path: Path, invoke: Invoke) -> None:
    event = json.loads(path.read_text())
    source, kind = source_and_kind(path)
    response = invoke(event)

    if source == "rest":  # the 1.0 output format carries both header maps
        assert isinstance(response["headers"], dict) and isinstance(response["multiValueHeaders"], dict)
    session = header(response, SESSION_HEADER)

    if kind in ("chat", "continue", "stream"):
        assert response["statusCode"] == 200, response
        assert session is not None, f"no {SESSION_HEADER} in {response}"
        assert VALID_SESSION_ID.fullmatch(session)
        if kind == "continue":
            assert session == request_header(event, SESSION_HEADER)
        reply = reply_text(response)
        assert reply.startswith("Echo: ")
        assert re.search(r"\(I was given \d+ messages?\.\)$", reply), reply
    if kind in ("chat", "continue"):
        body = json_body(response)
        assert body["object"] == "chat.completion"
        assert body["model"] == "echo"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] == "stop"
    elif kind == "stream":
        chunks = sse_chunks(response)
        assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
        assert len({chunk["id"] for chunk in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        finishes = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"]]
        assert finishes[-1] == "stop" and finishes.count("stop") == 1
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0  # include_usage
    elif kind == "models":
        assert response["statusCode"] == 200, response
        body = json_body(response)
        assert body["object"] == "list"
        assert "echo" in [model["id"] for model in body["data"]]
    elif kind == "bad-request":
        assert response["statusCode"] == 400, response
        error = json_body(response)["error"]
        assert set(error) == ERROR_KEYS
        assert error["type"] == "invalid_request_error"
        assert "JSON" in error["message"]
    else:  # a sample added later must say what it expects, or this test fails
        pytest.fail(f"no expectations known for a {kind!r} sample ({path.name}): add them here")


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.stem)
def test_body_matches_the_official_openai_schema(path: Path, invoke: Invoke) -> None:
    _, kind = source_and_kind(path)
    response = invoke(json.loads(path.read_text()))
    if kind in ("chat", "continue"):
        validate(json_body(response), "CreateChatCompletionResponse")
    elif kind == "stream":
        for chunk in sse_chunks(response):
            validate(chunk, "CreateChatCompletionStreamResponse")
    elif kind == "models":
        validate(json_body(response), "ListModelsResponse")
    elif kind == "bad-request":
        validate(json_body(response), "ErrorResponse")
    else:
        pytest.fail(f"no schema known for a {kind!r} sample ({path.name}): name the one its body must match")


@pytest.mark.parametrize("source", SOURCES)
def test_continue_event_twice_continues_the_same_session(source: str, invoke: Invoke) -> None:
    event = load_event(f"{source}-continue")
    first = invoke(event)
    second = invoke(event)
    assert first["statusCode"] == second["statusCode"] == 200
    assert header(first, SESSION_HEADER) == header(second, SESSION_HEADER) == "demo-session-1"
    assert reply_text(first) == "Echo: Do you remember me? (I was given 1 message.)"
    # The stored user message and reply, then the new user message.
    assert reply_text(second) == "Echo: Do you remember me? (I was given 3 messages.)"


@pytest.mark.parametrize(
    ("name", "given"),
    [
        ("rest-chat", 4),  # its system prompt, user message and the reply, then the new message
        ("http-stream", 3),  # a buffered stream keeps its turn too
        ("url-stream", 3),
    ],
)
def test_a_turn_without_the_header_starts_a_session_that_continues(name: str, given: int, invoke: Invoke) -> None:
    source, _ = source_and_kind(Path(name))
    started = invoke(load_event(name))
    session = header(started, SESSION_HEADER)
    assert session is not None
    continued = invoke(with_session(load_event(f"{source}-continue"), session))
    assert header(continued, SESSION_HEADER) == session
    assert reply_text(continued) == f"Echo: Do you remember me? (I was given {given} messages.)"


def test_fake_context_counts_down_from_thirty_seconds() -> None:
    from devtools.invoke import FakeLambdaContext

    context = FakeLambdaContext()
    first = context.get_remaining_time_in_millis()
    assert 29_000 < first <= 30_000
    time.sleep(0.02)
    assert context.get_remaining_time_in_millis() < first
    assert uuid.UUID(context.aws_request_id)
    assert context.invoked_function_arn == f"arn:aws:lambda:us-east-1:123456789012:function:{context.function_name}"
    assert context.log_group_name == f"/aws/lambda/{context.function_name}"
    assert "[$LATEST]" in context.log_stream_name and context.function_version == "$LATEST"
    assert int(context.memory_limit_in_mb) > 0


# -- devtools.invoke (`make invoke`) -----------------------------------------------


def test_invoke_refuses_a_missing_or_broken_event_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from devtools.invoke import main

    assert main([str(tmp_path / "nope.json")]) == 2
    assert "event file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"httpMethod": ')
    assert main([str(broken)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


@pytest.mark.integration
def test_make_invoke_runs_a_rest_event_against_dynamodb_local(dynamodb_local: str) -> None:
    import boto3

    table = f"sessions-invoke-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local, "SESSIONS_TABLE": table}
    client = boto3.client("dynamodb", endpoint_url=dynamodb_local)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "devtools.invoke", "events/rest-chat.json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr
        assert f"Using DynamoDB at {dynamodb_local}" in result.stderr  # it started no DynamoDB Local of its own
        # The Lambda response, pretty-printed, then the decoded body and the session id.
        response_json = result.stdout.split("\n\n")[0].split("\n", 1)[1]
        response = json.loads(response_json)
        assert response["statusCode"] == 200
        session = header(response, SESSION_HEADER)
        assert session is not None
        assert f"X-Hermes-Session-Id: {session}" in result.stdout
        assert '"content": "Echo: Hello from Lambda! (I was given 2 messages.)"' in result.stdout
        assert any(session in item["pk"]["S"] for item in table_items(client, table)), "the turn was not stored"
    finally:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=table)


# -- hostile values in the event ------------------------------------------------------

FUZZED_ROUTES = [("GET", "/v1/models"), ("GET", "/v1/sessions"), ("GET", "/v1/sessions/0/messages"), ("GET", "/health")]


def test_any_unicode_in_an_events_headers_and_query_is_never_a_5xx(invoke: Invoke) -> None:
    """Full Unicode (lone surrogates, which JSON can carry, included) in any header or
    query value, `X-Forwarded-Port` and `Host` too: Mangum used to raise on some, before
    the app could answer."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from tests.e2e.events import rest_event, url_event
    from tests.reliability.budget import RANDOM, examples
    from tests.reliability.contract import assert_contract_error
    from tests.reliability.test_fuzz_parsing import unicode_text

    names = st.sampled_from(["X-Forwarded-Port", "Host", SESSION_HEADER, "Idempotency-Key", "Content-Type", "Accept"])

    @given(
        route=st.sampled_from(FUZZED_ROUTES),
        rest=st.booleans(),
        headers=st.dictionaries(names, unicode_text, max_size=3),
        query=st.dictionaries(st.sampled_from(["limit", "after"]) | unicode_text, unicode_text, max_size=2),
    )
    @settings(
        max_examples=examples(60),
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(route: tuple[str, str], rest: bool, headers: dict[str, str], query: dict[str, str]) -> None:
        method, path = route
        if rest:
            event = rest_event(method, path, headers=headers, query=query)
        else:
            raw = "&".join(f"{name}={value}" for name, value in query.items())
            event = url_event(method, path, headers=headers, raw_query=raw)
        response = invoke(event)
        assert response["statusCode"] < 500, (headers, query, response)
        if response["statusCode"] >= 400:
            assert_contract_error(response["statusCode"], response["body"])

    fuzz()
