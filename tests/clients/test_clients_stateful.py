"""The clients people use, against a real Threadline: what needs OpenAI's stateful surface
(issue 11): the Conversations API, `item_reference` input items, `GET /v1/models/{id}`,
and `X-Hermes-Session-Id` on `/v1/responses`.

Each test calls the SDK exactly as its docs show and asserts what the user sees: the echo
model's message count grows as the conversation does, whichever face carried it.
"""

from __future__ import annotations

import pytest

from tests.clients.harness import ClientRuns, echo

pytestmark = pytest.mark.integration

CLIENT_SCENARIOS = {
    "openai_sdk.mjs": ("models_retrieve", "conversations", "responses_session_header", "background_and_resume"),
    "ai_sdk.mjs": ("responses_default_store",),
    "agents_sdk.py": ("conversations_session", "conversation_id"),
    "langchain_client.py": ("responses_session_header",),
}


# -- the OpenAI SDK for Node ----------------------------------------------------------


def test_node_sdk_models_retrieve(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "models_retrieve")
    assert seen["echo"] == {"id": "echo", "object": "model"}
    assert seen["missing"] == {"type": "NotFoundError", "status": 404, "code": "model_not_found"}


def test_node_sdk_conversation_continued_on_responses_and_chat_then_read_as_items(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "conversations")
    assert seen["object"] == "conversation" and seen["metadata"] == {"topic": "clients"}
    # The created item, then a response, a streamed response and a chat turn, one store.
    assert seen["replies"] == [echo("hello", 2), echo("again", 4), echo("from chat", 6)]
    roles = [item["role"] for item in seen["items"]]
    assert roles == ["user", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert all(item["type"] == "message" and item["id"].startswith("msg_") for item in seen["items"])


def test_node_sdk_responses_with_the_session_header_continue_that_session(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "responses_session_header")
    assert seen["replies"] == [echo("hi", 1), echo("and now Responses", 3)]
    assert seen["response_session"] == seen["session"]
    assert seen["invalid"] == {"status": 400, "code": "invalid_session_id"}


def test_node_sdk_background_response_and_a_resumed_stream(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "background_and_resume")
    assert seen["queued"] == {"status": "queued", "background": True}
    assert seen["done"] == {"status": "completed", "text": echo("in the background", 1)}
    # Four events read, the connection dropped, the rest from starting_after: all of them once.
    assert seen["sequence"] == list(range(len(seen["sequence"])))
    assert seen["last"] == "response.completed"
    assert seen["text"] == echo("one two three four five", 1)
    assert seen["cancelEnded"] == {"type": "BadRequestError", "status": 400}


# -- the Vercel AI SDK ----------------------------------------------------------------


def test_ai_sdk_default_responses_model_over_four_turns_with_store_on(clients: ClientRuns) -> None:
    seen = clients.saw("ai_sdk.mjs", "responses_default_store")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5), echo("four", 7)]
    # The SDK referred to the earlier answers by id: the path this test is about.
    assert seen["inputs"][1] == ["role:user", "item_reference", "role:user"]


# -- OpenAI's Agents SDK for Python (the agent's instructions are one more message) ------


def test_agents_sdk_openai_conversations_session_over_two_runs(clients: ClientRuns) -> None:
    seen = clients.saw("agents_sdk.py", "conversations_session")
    assert seen["replies"] == [echo("hello", 2), echo("again", 4)]
    assert [item["role"] for item in seen["items"]] == ["user", "assistant", "user", "assistant"]


def test_agents_sdk_runs_on_a_server_side_conversation(clients: ClientRuns) -> None:
    seen = clients.saw("agents_sdk.py", "conversation_id")
    assert seen["replies"] == [echo("hello", 2), echo("again", 4)]


# -- LangChain's ChatOpenAI -----------------------------------------------------------


def test_langchain_session_header_on_chat_then_use_responses_api(clients: ClientRuns) -> None:
    seen = clients.saw("langchain_client.py", "responses_session_header")
    assert seen["replies"] == [echo("hello", 1), echo("now through Responses", 3)]
    assert seen["response_session"] == seen["session"]
