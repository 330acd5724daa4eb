"""API keys as deployed: read from Secrets Manager (a local endpoint serving moto's
implementation over HTTP), by the real app on uvicorn, with sessions on DynamoDB Local.

The app is configured from the environment exactly as the template configures it
(`API_KEYS_SECRET_ARN`, `SESSIONS_TABLE`); the only thing a test supplies is the key
ring's clock, so "five minutes later" costs no sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from core.settings import get_settings
from core.store.base import SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from handler.auth import KeyConfigError, KeyRing
from tests.schemas import validate
from tests.secrets_manager import LocalSecretsManager
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
MAX_AGE = 300
MAX_STALE = 900
# Shaped like the key the template generates (48 letters and digits, no punctuation).
GENERATED = "Zq8wT3nVb6Kx1LmP0aR7sY2dF5gH9jC4eU6iO1pA3sD8fG2h"
KEY_A = "tl-alice-first-4b1d9e0c"
KEY_B = "tl-alice-second-77a3f2e1"
KEY_BOB = "tl-bob-only-0c9e5a13"
ALL_KEYS = (GENERATED, KEY_A, KEY_B, KEY_BOB)


class Clock:
    """The key ring's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSecretsManager]:
    from core.secrets import get_secrets_client

    with LocalSecretsManager() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint.url)
        get_secrets_client.cache_clear()  # the process's client, pointed at this endpoint
        yield endpoint
    get_secrets_client.cache_clear()


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test does, no key and no secret value reaches a log record."""
    caplog.set_level(logging.INFO)
    yield
    for key in ALL_KEYS:
        assert key not in caplog.text


@contextmanager
def deployed(
    local_table: tuple[Any, str], secret_arn: str, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> Iterator[httpx.Client]:
    """The app as the template configures it, on a real server; an HTTP client for it."""
    monkeypatch.setenv("API_KEYS_SECRET_ARN", secret_arn)
    monkeypatch.setenv("API_KEYS_MAX_AGE_SECONDS", str(MAX_AGE))
    monkeypatch.setenv("API_KEYS_MAX_STALE_SECONDS", str(MAX_STALE))
    get_settings.cache_clear()
    app = create_app(keyring=KeyRing(get_settings(), clock=clock))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        yield http
    get_settings.cache_clear()


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def chat(http: httpx.Client, key: str, text: str, session: str | None = None, **headers: str) -> httpx.Response:
    if session is not None:
        headers[HEADER] = session
    body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
    return http.post("/v1/chat/completions", json=body, headers=bearer(key, **headers))


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == code
    for key in ALL_KEYS:
        assert key not in response.text


def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


def derived(key: str) -> str:
    """The owner name a plain key always had: pinned here, not imported, so it cannot drift."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


# -- (a) rotation keeps the owner ---------------------------------------------------


def test_rotating_a_key_under_a_name_keeps_every_session_response_and_retry(
    secrets: LocalSecretsManager, local_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, clock = secrets.client(), Clock()
    arn = sm.create_secret(Name="threadline-keys", SecretString=f"alice:{KEY_A}")["ARN"]
    with deployed(local_table, arn, monkeypatch, clock) as http:
        assert content(chat(http, KEY_A, "pack the tent", "trip")) == "Echo: pack the tent (I was given 1 message.)"
        paid = chat(http, KEY_A, "pay the campsite", "bills", **{"Idempotency-Key": "pay-1"})
        stored = http.post("/v1/responses", json={"model": "echo", "input": "remember me"}, headers=bearer(KEY_A))
        assert stored.status_code == 200, stored.text

        # Rotation, step 1: the new key is added under the same name; both work.
        sm.put_secret_value(SecretId=arn, SecretString=f"alice:{KEY_A}\nalice:{KEY_B}")
        clock.advance(MAX_AGE)
        assert http.get("/v1/models", headers=bearer(KEY_A)).status_code == 200
        listed = http.get("/v1/sessions", headers=bearer(KEY_B))
        assert {"trip", "bills"} <= {s["id"] for s in listed.json()["data"]}

        # Step 2: clients moved to B; A is removed (here in the JSON form).
        sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"alice": [KEY_B]}))
        clock.advance(MAX_AGE)
        assert_error(http.get("/v1/sessions", headers=bearer(KEY_A)), 401, "invalid_api_key")
        assert content(chat(http, KEY_B, "and the stove", "trip")) == "Echo: and the stove (I was given 3 messages.)"
        retried = chat(http, KEY_B, "pay the campsite", "bills", **{"Idempotency-Key": "pay-1"})
        assert retried.json() == paid.json()  # the retry's record survived the rotation
        again = http.get(f"/v1/responses/{stored.json()['id']}", headers=bearer(KEY_B))
        assert again.status_code == 200 and again.json()["id"] == stored.json()["id"]

    state = asyncio.run(store(local_table).load(SessionKey("alice", "trip"), 100))
    assert [m["content"] for m in state.messages if m["role"] == "user"] == ["pack the tent", "and the stove"]


# -- (b) plain keys keep their owner ------------------------------------------------


def test_plain_keys_keep_the_owner_they_always_had_and_can_be_given_it_by_name(
    secrets: LocalSecretsManager, local_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, clock = secrets.client(), Clock()
    arn = sm.create_secret(Name="threadline-keys", SecretString=GENERATED)["ARN"]  # what the template generates
    with deployed(local_table, arn, monkeypatch, clock) as http:
        assert content(chat(http, GENERATED, "hello", "old")) == "Echo: hello (I was given 1 message.)"
        written = asyncio.run(store(local_table).load(SessionKey(derived(GENERATED), "old"), 100))
        assert len(written.messages) == 2  # owned by the derived name, as before names existed

        # A plain list mixed with a named key, newline-separated: the plain key is unchanged.
        sm.put_secret_value(SecretId=arn, SecretString=f"{GENERATED}\nbob:{KEY_BOB}")
        clock.advance(MAX_AGE)
        assert content(chat(http, GENERATED, "still me", "old")) == "Echo: still me (I was given 3 messages.)"
        assert content(chat(http, KEY_BOB, "hi", "old")) == "Echo: hi (I was given 1 message.)"  # bob's own "old"

        # The derived name written out gives that data a second key, ready for a rotation.
        sm.put_secret_value(SecretId=arn, SecretString=f"{GENERATED}, {derived(GENERATED)}:{KEY_A}")
        clock.advance(MAX_AGE)
        assert content(chat(http, KEY_A, "new key", "old")) == "Echo: new key (I was given 5 messages.)"
        assert_error(chat(http, KEY_BOB, "gone"), 401, "invalid_api_key")

    assert asyncio.run(store(local_table).load(SessionKey("bob", "old"), 100)).messages


# -- (c) bounded staleness (plain keys, as the template generates them) --------------


def test_keys_outlive_an_unreachable_secret_only_until_the_stale_limit(
    secrets: LocalSecretsManager,
    local_table: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sm, clock = secrets.client(), Clock()
    arn = sm.create_secret(Name="threadline-keys", SecretString=f"{KEY_A},{KEY_B}")["ARN"]
    with deployed(local_table, arn, monkeypatch, clock) as http:
        assert content(chat(http, KEY_A, "one", "s")) == "Echo: one (I was given 1 message.)"
        secrets.stop()

        clock.advance(MAX_AGE)  # due for a refresh, which fails: the keys read 300 s ago still serve
        assert content(chat(http, KEY_A, "two", "s")) == "Echo: two (I was given 3 messages.)"
        clock.advance(MAX_STALE - MAX_AGE - 1)  # 1 s before the limit
        assert http.get("/v1/models", headers=bearer(KEY_B)).status_code == 200

        clock.advance(1)  # the limit: no key is trusted any more
        for key in (KEY_A, KEY_B):
            assert_error(chat(http, key, "three", "s"), 503, "service_unavailable")
        assert http.get("/health").status_code == 200  # public routes need no key

        # The secret is back, with A revoked: refused at the first successful read.
        secrets.start()
        sm.put_secret_value(SecretId=arn, SecretString=KEY_B)
        clock.advance(5)  # the retry interval after the last failed read
        assert_error(chat(http, KEY_A, "three", "s"), 401, "invalid_api_key")
        assert content(chat(http, KEY_B, "three")) == "Echo: three (I was given 1 message.)"
    assert "could not refresh the API keys" in caplog.text  # the outage was logged (without a key)


def test_a_revoked_key_is_refused_at_the_first_read_that_succeeds_within_the_limit(
    secrets: LocalSecretsManager, local_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, clock = secrets.client(), Clock()
    arn = sm.create_secret(Name="threadline-keys", SecretString=f"{KEY_A}\n{KEY_B}")["ARN"]
    with deployed(local_table, arn, monkeypatch, clock) as http:
        assert http.get("/v1/models", headers=bearer(KEY_A)).status_code == 200
        secrets.stop()
        clock.advance(MAX_AGE)
        assert http.get("/v1/models", headers=bearer(KEY_A)).status_code == 200  # stale, within the limit
        secrets.start()
        sm.put_secret_value(SecretId=arn, SecretString=KEY_B)
        clock.advance(5)
        assert_error(http.get("/v1/models", headers=bearer(KEY_A)), 401, "invalid_api_key")
        assert http.get("/v1/models", headers=bearer(KEY_B)).status_code == 200


def test_failed_reads_are_retried_at_most_every_few_seconds_and_one_at_a_time(
    secrets: LocalSecretsManager, local_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, clock = secrets.client(), Clock()
    arn = sm.create_secret(Name="threadline-keys", SecretString=KEY_A)["ARN"]
    secrets.delay_seconds = 0.3
    with deployed(local_table, arn, monkeypatch, clock) as http:
        # Cold start: ten requests at once wait for one read.
        results: list[int] = []

        def ask() -> None:
            results.append(http.get("/v1/models", headers=bearer(KEY_A)).status_code)

        threads = [threading.Thread(target=ask) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 10
        assert secrets.reads == 1

        # The secret is deleted (reads now fail): one failed read per retry interval, not per request.
        sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        clock.advance(MAX_AGE)
        for _ in range(5):
            assert http.get("/v1/models", headers=bearer(KEY_A)).status_code == 200
        assert secrets.reads == 2
        clock.advance(5)
        assert http.get("/v1/models", headers=bearer(KEY_A)).status_code == 200
        assert secrets.reads == 3


# -- (d) one key, two principals ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [f"alice:{KEY_A}\nbob:{KEY_A}", f"{KEY_A}, bob:{KEY_A}", json.dumps({"alice": KEY_A, "bob": [KEY_B, KEY_A]})],
    ids=["names", "plain-and-named", "json"],
)
def test_a_secret_giving_one_key_to_two_principals_is_refused(
    value: str,
    secrets: LocalSecretsManager,
    local_table: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn = secrets.client().create_secret(Name="threadline-keys", SecretString=value)["ARN"]
    with deployed(local_table, arn, monkeypatch, Clock()) as http:
        assert_error(chat(http, KEY_A, "whose am I?"), 503, "service_unavailable")
        assert_error(chat(http, KEY_B, "whose am I?"), 503, "service_unavailable")
    assert "two principals" in caplog.text


def test_api_keys_giving_one_key_to_two_principals_stop_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", f"alice:{KEY_A}\nbob:{KEY_A}")
    get_settings.cache_clear()
    try:
        with pytest.raises(KeyConfigError, match="two principals") as refused:
            create_app()
    finally:
        get_settings.cache_clear()
    assert KEY_A not in str(refused.value)
