"""API keys, principals and CORS, as a client and a browser see them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from handler.auth import KeyRing, OpenServiceRefused, check_startup, principal_id
from handler.principals import parse_entries
from tests.schemas import validate

HEADER = "X-Hermes-Session-Id"
ORIGIN = "https://chat.example.com"


def app_for(moto_table: tuple[Any, str], settings: Settings) -> Any:
    client, name = moto_table
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), settings)
    return create_app(service, settings=settings)


@pytest.fixture
async def keyed(moto_table: tuple[Any, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(sessions_table=moto_table[1], api_keys=("key-one", "key-two"), cors_origins=(ORIGIN,))
    transport = httpx.ASGITransport(app=app_for(moto_table, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


def turn(text: str, key: str | None, session: str | None = None) -> dict[str, Any]:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if session is not None:
        headers[HEADER] = session
    return {"json": {"model": "echo", "messages": [{"role": "user", "content": text}]}, "headers": headers}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "key-one" not in response.text and "key-two" not in response.text


async def test_requests_without_a_valid_key_are_refused(keyed: httpx.AsyncClient) -> None:
    assert_401(await keyed.post("/v1/chat/completions", **turn("hi", None)))
    assert_401(await keyed.post("/v1/chat/completions", **turn("hi", "key-three")))
    assert_401(await keyed.get("/v1/models", headers={"Authorization": "Basic a2V5LW9uZQ=="}))
    assert_401(await keyed.get("/v1/models", headers={"Authorization": "Bearer "}))
    ok = await keyed.post("/v1/chat/completions", **turn("hi", "key-one"))
    assert ok.status_code == 200


async def test_health_and_the_page_need_no_key(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/health")).status_code == 200
    assert (await keyed.get("/v1/health")).status_code == 200
    assert (await keyed.get("/")).status_code == 200


async def test_each_key_is_its_own_principal(keyed: httpx.AsyncClient) -> None:
    await keyed.post("/v1/chat/completions", **turn("one", "key-one", "shared-name"))
    mine = await keyed.post("/v1/chat/completions", **turn("two", "key-one", "shared-name"))
    assert mine.json()["choices"][0]["message"]["content"] == "Echo: two (I was given 3 messages.)"
    theirs = await keyed.post("/v1/chat/completions", **turn("other", "key-two", "shared-name"))
    assert theirs.json()["choices"][0]["message"]["content"] == "Echo: other (I was given 1 message.)"


def test_keys_match_their_principal_over_every_key() -> None:
    table = parse_entries(("alpha", "ops:beta", "gamma"))
    assert table.principal_for("beta") == "ops"
    assert table.principal_for("alpha") == principal_id("alpha")
    assert table.principal_for("bet") is None
    assert table.principal_for("") is None
    assert principal_id("alpha") != principal_id("beta")
    assert "alpha" not in principal_id("alpha")


async def test_keys_from_the_secret_follow_rotation_after_their_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        arn = secrets.create_secret(Name="threadline-keys", SecretString="first-key")["ARN"]
        now = [1000.0]
        ring = KeyRing(Settings(api_keys_secret_arn=arn, api_keys_max_age_seconds=300), clock=lambda: now[0])
        assert (await ring.table()).principal_for("first-key") == principal_id("first-key")
        secrets.put_secret_value(SecretId=arn, SecretString="second-key, third-key")
        now[0] += 299
        assert (await ring.table()).principal_for("first-key") is not None  # cached per container
        now[0] += 2
        table = await ring.table()
        assert table.principal_for("first-key") is None
        assert table.principal_for("third-key") == principal_id("third-key")


def test_running_open_warns_and_lambda_refuses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_startup(Settings())
    assert any("open" in record.getMessage() for record in caplog.records)
    with pytest.raises(OpenServiceRefused):
        check_startup(Settings(in_lambda=True))
    check_startup(Settings(in_lambda=True, api_keys_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:x"))


# -- CORS ------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_needs_no_key(keyed: httpx.AsyncClient) -> None:
    requested = "authorization, content-type, idempotency-key, x-hermes-session-id, x-stainless-os, x-stainless-retry-count, x-evil"
    response = await keyed.options(
        "/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    granted = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert granted == {
        "authorization",
        "content-type",
        "idempotency-key",
        "x-hermes-session-id",
        "x-stainless-os",
        "x-stainless-retry-count",
    }
    assert response.headers["vary"] == "Origin"


async def test_origins_not_allowed_get_no_cors_headers(keyed: httpx.AsyncClient) -> None:
    preflight = await keyed.options(
        "/v1/chat/completions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert not [h for h in preflight.headers if h.startswith("access-control-")]
    actual = await keyed.post(
        "/v1/chat/completions",
        **turn("hi", "key-one") | {"headers": {"Authorization": "Bearer key-one", "Origin": "https://evil.example"}},
    )
    assert actual.status_code == 200
    assert not [h for h in actual.headers if h.startswith("access-control-")]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/v1/chat/completions", turn("hi", "key-one"), 200),
        (
            "POST",
            "/v1/chat/completions",
            turn("hi", "key-one")
            | {"json": {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "s"}]}},
            200,
        ),
        ("POST", "/v1/chat/completions", turn("hi", None), 401),
        ("GET", "/v1/nothing", {"headers": {"Authorization": "Bearer key-one"}}, 404),
        ("POST", "/v1/chat/completions", {"content": b"{", "headers": {"Authorization": "Bearer key-one"}}, 400),
    ],
)
async def test_every_response_to_an_allowed_origin_exposes_the_session_header(
    keyed: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), "Origin": ORIGIN}}
    response = await keyed.request(method, path, **kwargs)
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-expose-headers"] == f"{HEADER}, X-Threadline-Stream-Id"
    assert response.headers["vary"] == "Origin"


async def test_a_wildcard_allows_any_origin(moto_table: tuple[Any, str]) -> None:
    settings = Settings(sessions_table=moto_table[1], cors_origins=("*",))
    transport = httpx.ASGITransport(app=app_for(moto_table, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/v1/models", headers={"Origin": "https://anything.example"})
    assert response.headers["access-control-allow-origin"] == "https://anything.example"


async def test_without_cors_origins_no_cors_headers_are_sent(moto_table: tuple[Any, str]) -> None:
    transport = httpx.ASGITransport(app=app_for(moto_table, Settings(sessions_table=moto_table[1])))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/v1/models", headers={"Origin": ORIGIN})
    assert not [h for h in response.headers if h.startswith("access-control-")]
