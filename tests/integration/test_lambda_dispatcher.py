"""`LambdaDispatcher` (a background job as an asynchronous invocation of this function)
against a fake Lambda Invoke endpoint over real HTTP: botocore's own request, signed
with the dummy credentials, sent where `AWS_ENDPOINT_URL_LAMBDA` says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from core.background import response_job
from core.background_lambda import LambdaDispatcher
from tests.e2e.fake_lambda import FakeLambda

FUNCTION = "threadline-test-threadline"


@pytest.fixture
def fake_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLambda]:
    from core.aws import botocore_session

    delivered: list[bytes] = []
    with FakeLambda(FUNCTION, delivered.append) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.endpoint)
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        for name in ("THREADLINE_JOB_FUNCTION", "THREADLINE_JOB_QUALIFIER", "AWS_LAMBDA_FUNCTION_VERSION"):
            monkeypatch.delenv(name, raising=False)
        botocore_session.cache_clear()
        fake.delivered = delivered  # type: ignore[attr-defined]
        yield fake
    botocore_session.cache_clear()


def test_a_job_is_an_asynchronous_invocation_of_the_alias(
    fake_lambda: FakeLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the template configures it: the alias `live`, whose retry settings and IAM
    grant are the ones the template writes, not the version the code runs."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    monkeypatch.setenv("THREADLINE_JOB_QUALIFIER", "live")
    job = response_job("alice", "resp_0123456789abcdef")
    asyncio.run(LambdaDispatcher.from_environment().dispatch(job))

    (call,) = fake_lambda.invocations
    assert call.status == 202
    assert call.function_name == FUNCTION
    assert call.qualifier == "live"
    assert call.invocation_type == "Event"
    assert call.job() == {
        "threadline_job": {"kind": "response", "owner": "alice", "response_id": "resp_0123456789abcdef"}
    }
    # Signed by botocore for Lambda in the configured region, with the credentials it was given.
    assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/lambda/aws4_request" in call.headers["authorization"]
    assert fake_lambda.delivered == [call.payload]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("version", "qualifier"), [("12", "12"), ("$LATEST", None)])
def test_without_an_alias_it_invokes_the_version_it_runs(
    fake_lambda: FakeLambda, monkeypatch: pytest.MonkeyPatch, version: str, qualifier: str | None
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", version)
    asyncio.run(LambdaDispatcher.from_environment().dispatch(response_job("bob", "resp_1")))
    (call,) = fake_lambda.invocations
    assert (call.function_name, call.qualifier, call.invocation_type) == (FUNCTION, qualifier, "Event")


def test_an_invocation_lambda_refuses_fails_the_dispatch(
    fake_lambda: FakeLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller (`RecordedResponses.queue`) must learn it: it then ends the queued
    response as failed and answers 503, rather than leave it queued for 15 minutes."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "some-other-function")
    with pytest.raises(Exception, match="Function not found"):
        asyncio.run(LambdaDispatcher.from_environment().dispatch(response_job("bob", "resp_1")))
    assert [call.status for call in fake_lambda.invocations] == [404]
    assert fake_lambda.delivered == []  # type: ignore[attr-defined]


def test_the_payload_is_the_job_as_json(fake_lambda: FakeLambda) -> None:
    job = response_job("owner with spaces/and#marks", "resp_x")
    asyncio.run(LambdaDispatcher.from_environment().dispatch(job))
    (call,) = fake_lambda.invocations
    assert json.loads(call.payload) == job
