"""Schemathesis against the app's own OpenAPI document, in-process: no 5xx, every error in shape.

Every operation the document lists (whatever routes the app mounts when the tests
run) is fuzzed with requests that fit its schema (positive) and requests that break
it (negative), through schemathesis' ASGI transport, on moto. Checks on every
response: schemathesis' `not_a_server_error`, and `contract_error_shape`: any 4xx /
5xx body is `{"error": {"message", "type", "param", "code"}}` with the contract's
status rules (400 never 422, and so on; see `contract.py`).

Bounded and deterministic: `MAX_EXAMPLES` per operation and mode, derandomized,
no example database. The cases come from `APIOperation.as_strategy()` under our own
`@given` rather than `@schema.parametrize()`: with pytest 9.2, schemathesis 4.32's
plugin gives every generated test the same node id (and its fixture-based loader
fails outright on `Function._nodeid`), which would make a failure unattributable.

What the document cannot drive (headers such as `X-Hermes-Session-Id` and
`Idempotency-Key`, the `limit` / `after` query parameters, `Authorization`) is not
in it; `test_fuzz_parsing.py` fuzzes those with Hypothesis directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.reliability.budget import RANDOM, examples
from tests.reliability.contract import error_problems

MAX_EXAMPLES = examples(60)
SETTINGS = Settings(sessions_table="sessions-unit")
# The document is read once, at collection, from the app itself; each test then gives
# the app a fresh service on that test's moto table (`app.state.services`, as deps.py reads it).
APP = create_app(settings=SETTINGS)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Negative cases need something that can break the schema: a body. (A path parameter is a
# string whatever is sent, and these routes have no other parameters in the document.)
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.body
]


@pytest.fixture(autouse=True)
def service(moto_table: tuple[Any, str]) -> Iterator[None]:
    client, name = moto_table
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    APP.state.services.clear()
    APP.state.services["chat"] = ChatService(store, EchoProvider(), SETTINGS)
    yield
    APP.state.services.clear()


@schemathesis.check
def contract_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error response follows the contract's error shape and status rules."""
    if response.status_code >= 400:
        problems = error_problems(response.status_code, response.content)
        if problems:
            raise AssertionError("\n".join(problems))
    return None


def test_the_document_lists_the_routes_of_the_contract() -> None:
    labels = {operation.label for operation in OPERATIONS}
    assert {
        "POST /v1/chat/completions",
        "GET /v1/models",
        "GET /v1/sessions",
        "GET /v1/sessions/{session_id}/messages",
        "DELETE /v1/sessions/{session_id}",
    } <= labels
    chat = next(op for op in OPERATIONS if op.label == "POST /v1/chat/completions")
    assert chat.body, "the chat completions body has no schema: schemathesis could only send empty bodies"


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label} {mode}" for op, mode in CASES])
def test_fuzzed_requests_get_no_5xx_and_errors_in_the_contract_shape(
    operation: Any, mode: GenerationMode, report: Callable[[str, str], None]
) -> None:
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error, contract_error_shape])

    fuzz()
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    report("statuses", f"schemathesis {operation.label} ({mode}): {sum(statuses.values())} requests; {summary}")


@given(st.data())
@settings(max_examples=1, database=None, deadline=None)
def test_the_strategies_produce_requests(data: st.DataObject) -> None:
    """Guards the test above against silently generating nothing."""
    for operation in OPERATIONS:
        case = data.draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        assert case.operation is operation
