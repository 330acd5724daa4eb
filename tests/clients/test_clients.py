"""The clients people use, against a real Threadline on DynamoDB Local: what works today.

Each test reads what a user of that client saw (the scripts in this folder print it):
the echo model says how many messages it was given, so a count that grows 1, 3, 5 means
the conversation's earlier turns reached the model, however that client carries them.
The clients come from `make clients` (pinned in node/package-lock.json and
requirements.txt); a missing one fails here.
"""

from __future__ import annotations

import pytest

from tests.clients.harness import ClientRuns, echo

pytestmark = pytest.mark.integration

CLIENT_SCENARIOS = {
    "openai_sdk.mjs": ("chat_stream", "responses_chain", "models_list"),
    "ai_sdk.mjs": ("chat_generate", "chat_session_header", "responses_store_false", "responses_previous_id"),
    "agents_sdk.py": ("previous_response_id", "input_list"),
    "langchain_client.py": ("header_continuity", "responses_api"),
}


# -- the OpenAI SDK for Node ----------------------------------------------------------


def test_node_sdk_chat_stream_continues_the_session_its_header_names(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "chat_stream")
    assert seen["replies"] == [echo("hello", 1), echo("more", 3), echo("again", 5)]
    first, *later = seen["sessions"]
    assert first and later == [first, first]


def test_node_sdk_responses_chain_with_previous_response_id(clients: ClientRuns) -> None:
    seen = clients.saw("openai_sdk.mjs", "responses_chain")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5)]
    assert seen["streamed_deltas"] == echo("three", 5)
    assert seen["retrieved"] == echo("three", 5)


def test_node_sdk_lists_the_echo_model(clients: ClientRuns) -> None:
    assert clients.saw("openai_sdk.mjs", "models_list")["ids"] == ["echo"]


# -- the Vercel AI SDK ----------------------------------------------------------------


def test_ai_sdk_chat_model_generate_then_stream_over_the_appended_messages(clients: ClientRuns) -> None:
    seen = clients.saw("ai_sdk.mjs", "chat_generate")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5)]


def test_ai_sdk_chat_model_with_the_session_header_sends_only_new_messages(clients: ClientRuns) -> None:
    seen = clients.saw("ai_sdk.mjs", "chat_session_header")
    assert seen["replies"] == [echo("hello", 1), echo("more", 3), echo("again", 5)]
    first, *later = seen["sessions"]
    assert first and later == [first, first]


def test_ai_sdk_responses_model_with_store_false(clients: ClientRuns) -> None:
    seen = clients.saw("ai_sdk.mjs", "responses_store_false")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5)]
    assert seen["stores"] == [False, False, False]


def test_ai_sdk_responses_model_with_previous_response_id(clients: ClientRuns) -> None:
    seen = clients.saw("ai_sdk.mjs", "responses_previous_id")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5)]


# -- OpenAI's Agents SDK for Python (the agent's instructions are one more message) ------


def test_agents_sdk_previous_response_id_and_a_streamed_run(clients: ClientRuns) -> None:
    seen = clients.saw("agents_sdk.py", "previous_response_id")
    assert seen["replies"] == [echo("hello", 2), echo("again", 4), echo("and again", 6)]
    assert seen["streamed_deltas"] == echo("and again", 6)
    assert len(set(seen["response_ids"])) == 3


def test_agents_sdk_input_list_of_the_last_run(clients: ClientRuns) -> None:
    seen = clients.saw("agents_sdk.py", "input_list")
    assert seen["replies"] == [echo("hello", 2), echo("again", 4)]


# -- LangChain's ChatOpenAI -----------------------------------------------------------


def test_langchain_session_header_in_default_headers(clients: ClientRuns) -> None:
    seen = clients.saw("langchain_client.py", "header_continuity")
    assert seen["replies"] == [echo("hello", 1), echo("more", 3), echo("again", 5)]
    assert seen["response_session"] == seen["session"]


def test_langchain_use_responses_api_chains_with_previous_response_id(clients: ClientRuns) -> None:
    seen = clients.saw("langchain_client.py", "responses_api")
    assert seen["replies"] == [echo("one", 1), echo("two", 3), echo("three", 5), echo("four", 7)]
    assert seen["third_previous_response_id"] == seen["ids"][1]
