"""Test-wide set-up: dummy AWS credentials and region, DynamoDB Local, moto, fresh tables.

Nothing here can reach a real AWS endpoint: credentials are dummies, the region is
fixed, and every DynamoDB client points at moto or at the DynamoDB Local this
session starts on a free port (and always stops).
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

_DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "API_KEYS", "MODEL_PROVIDER", "MODELS"):
    os.environ.pop(_name, None)
os.environ.update(_DUMMY_AWS)


def _reset_cached_clients() -> None:
    from core.aws import botocore_session
    from core.secrets import get_secrets_client
    from core.settings import get_settings
    from core.store.client import get_dynamodb_client

    botocore_session.cache_clear()
    get_dynamodb_client.cache_clear()
    get_secrets_client.cache_clear()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    """One in-memory DynamoDB Local for the whole test session; its endpoint URL."""
    from devtools.dynamodb_local import DynamoDBLocal

    with DynamoDBLocal() as database:
        yield database.endpoint


@pytest.fixture
def local_table(dynamodb_local: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """A new, empty sessions table on DynamoDB Local; the process's client points at it."""
    from core.store.client import get_dynamodb_client
    from core.store.dynamodb import ensure_table

    name = f"sessions-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
    monkeypatch.setenv("SESSIONS_TABLE", name)
    _reset_cached_clients()
    client = get_dynamodb_client()
    ensure_table(client, name)
    yield client, name
    client.delete_table(TableName=name)
    _reset_cached_clients()


@pytest.fixture
def moto_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """A sessions table in moto, for fast unit tests; the process's client points at it."""
    from moto import mock_aws

    from core.store.client import get_dynamodb_client
    from core.store.dynamodb import ensure_table

    name = "sessions-unit"
    monkeypatch.setenv("SESSIONS_TABLE", name)
    with mock_aws():
        _reset_cached_clients()
        client = get_dynamodb_client()
        ensure_table(client, name)
        yield client, name
    _reset_cached_clients()


def table_items(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item in the table (tests only: a Scan)."""
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**request)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture
def mangum_loop() -> Iterator[None]:
    """Mangum runs every invocation on the thread's current event loop (a warm Lambda
    container reuses one); a test gets an open one of its own, and the previous one is
    put back afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            previous: asyncio.AbstractEventLoop | None = asyncio.get_event_loop()
        except RuntimeError:
            previous = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(previous)
        loop.close()
