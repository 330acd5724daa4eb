"""One real Threadline per test module for the client tests, and the module's client runs
(see harness.py): a module lists what it runs in `CLIENT_SCENARIOS`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients.harness import ClientRuns, Threadline, serve_threadline


@pytest.fixture(scope="module")
def threadline(dynamodb_local: str) -> Iterator[Threadline]:
    yield from serve_threadline(dynamodb_local)


@pytest.fixture(scope="module")
def clients(request: pytest.FixtureRequest, threadline: Threadline) -> ClientRuns:
    return ClientRuns(threadline, request.module.CLIENT_SCENARIOS)
