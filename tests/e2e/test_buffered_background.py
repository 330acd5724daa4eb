"""The buffered entry (`handler.lambda_buffered.handler`, the managed runtime's handler)
with background responses dispatched as asynchronous invocations: the job event
bypasses Mangum and runs on Mangum's own event loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.events import rest_event
from tests.e2e.fake_lambda import FakeLambda
from tests.e2e.test_buffered_handler import Handler, body_of, context

KEY = "buffered-background-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUNCTION = "threadline-test"


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    payloads: list[bytes] = []
    with FakeLambda(FUNCTION, payloads.append) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.endpoint)
        yield payloads


@pytest.fixture
def handler(
    delivered: list[bytes], local_table: tuple[Any, str], mangum_loop: None, monkeypatch: pytest.MonkeyPatch
) -> Handler:
    """The module's handler around a fresh app, configured as inside Lambda."""
    from core.aws import botocore_session
    from core.settings import get_settings
    from handler import lambda_buffered
    from handler.app import create_app

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "3")
    monkeypatch.setenv("THREADLINE_JOB_QUALIFIER", "live")
    monkeypatch.setenv("API_KEYS", KEY)
    monkeypatch.setenv("MODEL_PROVIDER", "echo")
    get_settings.cache_clear()
    botocore_session.cache_clear()
    monkeypatch.setattr(lambda_buffered.handler, "app", create_app())
    return lambda_buffered.handler


def test_a_background_response_completes_through_the_job_invocation(handler: Handler, delivered: list[bytes]) -> None:
    created = handler(
        rest_event("POST", "/v1/responses", {"model": "echo", "input": "later", "background": True}, headers=AUTH),
        context(),
    )
    assert created["statusCode"] == 200, created
    queued = json.loads(body_of(created))
    assert queued["status"] == "queued"
    (payload,) = delivered
    job = json.loads(payload)
    assert job["threadline_job"]["response_id"] == queued["id"]

    # Lambda delivers the job to the same handler: no HTTP answer, the job's own result.
    assert handler(job, context()) == {"job": "response", "response_id": queued["id"], "done": True}

    read = handler(rest_event("GET", f"/v1/responses/{queued['id']}", headers=AUTH), context())
    done = json.loads(body_of(read))
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "Echo: later (I was given 1 message.)"

    # Delivered again (a duplicate): refused by the claim, nothing changes.
    assert handler(job, context())["done"] is True
    again = json.loads(body_of(handler(rest_event("GET", f"/v1/responses/{queued['id']}", headers=AUTH), context())))
    assert again == done


def test_a_malformed_job_is_answered_not_raised(handler: Handler) -> None:
    assert handler({"threadline_job": 42}, context()) == {"job": None, "done": False, "error": "malformed job"}
    answer = handler({"threadline_job": {"kind": "response", "owner": ""}}, context())
    assert answer["done"] is False


def test_a_job_that_fails_fails_the_invocation(handler: Handler, monkeypatch: pytest.MonkeyPatch) -> None:
    """So the managed runtime reports it and Lambda retries it (the claim makes that safe)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    from core.store.base import StoreUnavailable
    from core.store.client import get_dynamodb_client

    get_dynamodb_client.cache_clear()
    handler.app.state.services.clear()  # type: ignore[attr-defined]
    job = {"threadline_job": {"kind": "response", "owner": "alice", "response_id": "resp_0123456789abcdef"}}
    with pytest.raises(StoreUnavailable):
        handler(job, context())
