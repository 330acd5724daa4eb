"""Schemathesis driven by the official OpenAI spec, against the real app: no 5xx, every
answer in the official shape.

Requests come from the pinned `tests/openai-openapi/openapi.json` (not from our own
document, which only says what we think we accept): the operations Threadline serves
(`official_spec.OPERATIONS`), positive cases and, for operations with a body, negative
ones, with `model` forced to "echo". They run in-process through schemathesis' ASGI
transport against the app on moto (the same app every face serves). Each answer is
checked against the spec: a 2xx JSON body against the operation's documented schema,
each `data:` payload of a stream against `CreateChatCompletionStreamResponse` or the
`ResponseStreamEvent` family (decoded here, not by schemathesis), every error against
`ErrorResponse` and the contract's error rules; `official_spec.SPEC_EXCEPTIONS` lists,
with reasons, where the spec itself is wrong.

Bounded and deterministic by default: `FUZZ_EXAMPLES` (25) examples per operation and
mode, derandomized. `make fuzz` runs it long (FUZZ_EXAMPLES=1000, FUZZ_RANDOM=1: a new
seed each run, which Hypothesis prints on a failure).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from starlette.testclient import TestClient

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.reliability.budget import RANDOM, examples
from tests.reliability.contract import error_problems
from tests.reliability.official_spec import OPERATIONS, SPEC_EXCEPTIONS, check_answer, documented_schema
from tests.schemas import spec

EXAMPLES = examples(25)
SETTINGS = Settings(sessions_table="sessions-unit")
APP = create_app(settings=SETTINGS)
SCHEMA = schemathesis.openapi.from_dict(spec())
SCHEMA.app = APP
FOUND = {operation_id: SCHEMA.find_operation_by_id(operation_id) for operation_id in OPERATIONS}
CASES = [(op_id, GenerationMode.POSITIVE) for op_id in OPERATIONS] + [
    (op_id, GenerationMode.NEGATIVE) for op_id in OPERATIONS if FOUND[op_id].body
]


@pytest.fixture(autouse=True)
def service(moto_table: tuple[Any, str]) -> Iterator[None]:
    client, name = moto_table
    APP.state.services.clear()
    APP.state.services["chat"] = ChatService(
        DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), SETTINGS
    )
    APP.state.services["dispatcher"] = HeldJobs()
    yield
    APP.state.services.clear()


def header(response: Any, name: str) -> str:
    """One header of a schemathesis response (its headers map names to lists)."""
    value = response.headers.get(name) or response.headers.get(name.title()) or ""
    return str(value[0] if isinstance(value, list) else value)


def stored_response_id() -> str:
    """A response that exists, so that get and delete reach their 200s too."""
    with TestClient(APP) as http:
        created = http.post("/v1/responses", json={"model": "echo", "input": "hi"})
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


class HeldJobs:
    """A dispatcher that keeps background jobs queued (as Lambda does until a job's
    invocation starts), so that cancel has a queued response to reach its 200."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    async def dispatch(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)


def queued_response_id() -> str:
    with TestClient(APP) as http:
        created = http.post("/v1/responses", json={"model": "echo", "input": "hi", "background": True})
    assert created.status_code == 200 and created.json()["status"] == "queued", created.text
    return str(created.json()["id"])


def stored_conversation() -> tuple[str, str]:
    """A conversation with items, and one of its item ids."""
    with TestClient(APP) as http:
        created = http.post("/v1/conversations", json={"items": [{"role": "user", "content": "hi"}]})
        assert created.status_code == 200, created.text
        conversation = str(created.json()["id"])
        items = http.get(f"/v1/conversations/{conversation}/items").json()["data"]
    return conversation, str(items[0]["id"])


def shape(case: Any, operation_id: str, fill: dict[str, Any]) -> None:
    """Model "echo" always; half the bodies streamed; where the spec leaves them out,
    the odd real id or input (still requests the spec allows), so that answers get
    past the 404s and 400s."""
    if isinstance(case.body, dict):
        case.body["model"] = "echo"
        if fill["stream"]:
            case.body["stream"] = True
        if operation_id == "createResponse" and fill["input"] and "input" not in case.body:
            case.body["input"] = "hi"

    if operation_id in ("createConversation", "createConversationItems") and fill["input"]:
        body = case.body if isinstance(case.body, dict) else {}
        case.body = {**body, "items": [{"type": "message", "role": "user", "content": "hi"}]}
    if not fill["real_id"]:
        return
    parameters = dict(case.path_parameters or {})
    if "response_id" in parameters:
        parameters["response_id"] = queued_response_id() if operation_id == "cancelResponse" else stored_response_id()
    if "model" in parameters:
        parameters["model"] = "echo"
    if "conversation_id" in parameters:
        parameters["conversation_id"], item_id = stored_conversation()
        if "item_id" in parameters:
            parameters["item_id"] = item_id
    case.path_parameters = parameters


def test_the_spec_has_every_operation_we_serve_and_we_serve_no_other_yet() -> None:
    assert {op_id: op.label for op_id, op in FOUND.items()} == {
        "createChatCompletion": "POST /chat/completions",
        "createResponse": "POST /responses",
        "getResponse": "GET /responses/{response_id}",
        "deleteResponse": "DELETE /responses/{response_id}",
        "cancelResponse": "POST /responses/{response_id}/cancel",
        "listInputItems": "GET /responses/{response_id}/input_items",
        "listModels": "GET /models",
        "retrieveModel": "GET /models/{model}",
        "createConversation": "POST /conversations",
        "getConversation": "GET /conversations/{conversation_id}",
        "updateConversation": "POST /conversations/{conversation_id}",
        "deleteConversation": "DELETE /conversations/{conversation_id}",
        "listConversationItems": "GET /conversations/{conversation_id}/items",
        "createConversationItems": "POST /conversations/{conversation_id}/items",
        "getConversationItem": "GET /conversations/{conversation_id}/items/{item_id}",
        "deleteConversationItem": "DELETE /conversations/{conversation_id}/items/{item_id}",
    }
    # Every spec path the app routes is fuzzed (a path routed but not listed fails here).
    routed = {route.path.removeprefix("/v1") for route in APP.routes if hasattr(route, "methods")}
    served = {op.label.split(" ", 1)[1] for op in FOUND.values()}
    assert routed & set(spec()["paths"]) <= served


def test_each_spec_exception_still_differs_from_the_spec() -> None:
    """An exception whose reason the spec has since fixed fails here, to be removed."""
    assert documented_schema("deleteResponse", 404) == "Error"
    assert documented_schema("deleteResponse", 200) is None
    assert documented_schema("cancelResponse", 404) == "Error"
    assert set(SPEC_EXCEPTIONS) == {("deleteResponse", 404), ("deleteResponse", 200), ("cancelResponse", 404)}


@pytest.mark.parametrize(("operation_id", "mode"), CASES, ids=[f"{op_id} {mode.value}" for op_id, mode in CASES])
def test_official_requests_get_no_5xx_and_answers_in_the_official_shape(
    operation_id: str, mode: GenerationMode, report: Callable[[str, str], None]
) -> None:
    operation = FOUND[operation_id]
    statuses: Counter[str] = Counter()

    @given(
        case=operation.as_strategy(generation_mode=mode),
        fill=st.fixed_dictionaries({"input": st.booleans(), "real_id": st.booleans(), "stream": st.booleans()}),
    )
    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: minutes on these bodies
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any, fill: dict[str, Any]) -> None:
        shape(case, operation_id, fill)
        response = case.call()
        content_type = header(response, "content-type")
        streamed = content_type.startswith("text/event-stream")
        statuses[f"{response.status_code}{' stream' if streamed else ''}"] += 1
        sent = "" if isinstance(case.body, NotSet) else json.dumps(case.body, default=repr)[:300]
        where = f"{case.method} {case.formatted_path} {sent}"
        assert response.status_code < 500, (where, response.status_code, response.text[:300])
        if response.status_code >= 400:
            problems = error_problems(response.status_code, response.content)
            assert not problems, (where, problems)
        try:
            check_answer(operation_id, response.status_code, content_type, response.content)
        except AssertionError as failure:
            raise AssertionError(f"{where} -> {response.status_code}: {failure}") from None

    fuzz()
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    report("statuses", f"official spec {operation_id} ({mode.value}): {sum(statuses.values())} requests; {summary}")
    if mode is GenerationMode.POSITIVE and EXAMPLES >= 10:
        assert any(status.startswith("200") for status in statuses), "no official request got a 200"
