"""Lambda events whose client-controlled values made Mangum raise before the app could
answer (a 502 on both Lambda faces): after `sanitized`, Mangum builds the request."""

from __future__ import annotations

from typing import Any

import pytest
from mangum import Mangum

from devtools.invoke import FakeLambdaContext
from handler.lambda_events import sanitized
from tests.e2e.events import rest_event, url_event


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called: only infer() runs
    raise AssertionError("not called")


HOSTILE: dict[str, dict[str, Any]] = {
    "port ²": rest_event("GET", "/v1/models", headers={"X-Forwarded-Port": "²"}),
    "port of 5,000 digits": rest_event("GET", "/v1/models", headers={"X-Forwarded-Port": "9" * 5000}),
    "url port ½": url_event("GET", "/v1/models", headers={"x-forwarded-port": "½"}),
    "host with a bad port": rest_event("GET", "/v1/models", headers={"Host": "example.com:²"}),
    "host with two colons": url_event("GET", "/v1/models", headers={"host": "a:1:2"}),
    "surrogate in a header": rest_event("GET", "/v1/models", headers={"X-Hermes-Session-Id": "a\ud800"}),
    "surrogate in a url header": url_event("GET", "/v1/models", headers={"idempotency-key": "\udfff"}),
    "surrogate in the query": rest_event("GET", "/v1/sessions", query={"after": "\ud800"}),
    "surrogate in a query name": rest_event("GET", "/v1/sessions", query={"\ud800": "1"}),
    "surrogate in the raw query": url_event("GET", "/v1/sessions", raw_query="after=\ud800"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_mangum_builds_a_request_from_a_hostile_event_once_sanitized(name: str) -> None:
    event = HOSTILE[name]
    adapter = Mangum(_app, lifespan="off")
    with pytest.raises((ValueError, UnicodeEncodeError)):
        adapter.infer(event, FakeLambdaContext()).scope  # noqa: B018 - what happened before
    scope = adapter.infer(sanitized(event), FakeLambdaContext()).scope
    assert scope["method"] == "GET" and isinstance(scope["server"][1], int)


def test_an_ordinary_event_is_unchanged() -> None:
    event = rest_event("GET", "/v1/sessions", headers={"X-Hermes-Session-Id": "abc"}, query={"limit": "5"})
    assert sanitized(event) == event
    event = url_event("POST", "/v1/chat/completions", {"messages": []}, raw_query="a=b")
    assert sanitized(event) == event
