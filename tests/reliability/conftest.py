"""Fixtures of the reliability tests, and a summary section for the figures they report.

Figures (load throughput and latency, cancellation delays) are reported, never
asserted: a test calls `report("name", "text")`; the text is printed, recorded as a
property of the test (JUnit XML) and repeated in a "Threadline reliability" section
at the end of the pytest output, so `make test` shows it without `-s`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.store.dynamodb import DynamoDBSessionStore

_REPORTED: list[str] = []


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Callable[[str, str], None]:
    def add(name: str, text: str) -> None:
        record_property(name, text)
        _REPORTED.append(text)
        print(text)

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORTED:
        terminalreporter.section("Threadline reliability")
        for line in _REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture
def store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    """The sessions store on a fresh DynamoDB Local table, through the process's client."""
    client, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


@pytest.fixture
def clean_store(local_table: tuple[Any, str]) -> DynamoDBSessionStore:
    """The same table through a client of its own (same configuration, no faults on it),
    to read back what the faulted one left."""
    from core.store.client import get_dynamodb_client

    _, name = local_table
    return DynamoDBSessionStore(name, ttl_days=30, client=get_dynamodb_client.__wrapped__())
