"""LangChain's ChatOpenAI (`langchain-openai`) against Threadline, as its docs show it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from report import run_scenarios, server_from_env

base_url, api_key = server_from_env()
HEADER = "X-Hermes-Session-Id"


def chat(**options: Any) -> ChatOpenAI:
    return ChatOpenAI(model="echo", base_url=base_url, api_key=api_key, max_retries=0, **options)


def header_continuity() -> dict[str, Any]:
    """A session id of the user's choosing in default_headers: each call sends only its new message."""
    session = f"langchain-{uuid.uuid4()}"
    llm = chat(default_headers={HEADER: session}, include_response_headers=True)
    first = llm.invoke("hello")
    second = llm.invoke("more")
    streamed = "".join(chunk.text for chunk in llm.stream("again"))
    return {
        "session": session,
        "response_session": first.response_metadata["headers"].get(HEADER.lower()),
        "replies": [first.text, second.text, streamed],
    }


def responses_api() -> dict[str, Any]:
    """use_responses_api=True: chained explicitly with previous_response_id, then with
    use_previous_response_id over the usual message list, then streamed."""
    llm = chat(use_responses_api=True)
    first = llm.invoke("one")
    second = llm.invoke("two", previous_response_id=first.response_metadata["id"])
    chained = chat(use_responses_api=True, use_previous_response_id=True)
    history = [HumanMessage("one"), first, HumanMessage("two"), second, HumanMessage("three")]
    third = chained.invoke(history)
    history += [third, HumanMessage("four")]
    streamed = "".join(chunk.text for chunk in chained.stream(history))
    # What the server recorded: use_previous_response_id sent only the new message, chained.
    recorded = llm.root_client.responses.retrieve(third.response_metadata["id"])
    return {
        "replies": [first.text, second.text, third.text, streamed],
        "ids": [first.response_metadata["id"], second.response_metadata["id"], third.response_metadata["id"]],
        "third_previous_response_id": recorded.previous_response_id,
    }


# -- what needs the stateful surface (tests/clients/test_clients_stateful.py) --


def responses_session_header() -> dict[str, Any]:
    """The same default_headers session on chat completions, then with use_responses_api=True."""
    session = f"langchain-{uuid.uuid4()}"
    first = chat(default_headers={HEADER: session}).invoke("hello")
    second = chat(default_headers={HEADER: session}, use_responses_api=True, include_response_headers=True).invoke(
        "now through Responses"
    )
    return {
        "session": session,
        "response_session": second.response_metadata.get("headers", {}).get(HEADER.lower()),
        "replies": [first.text, second.text],
    }


def threaded(scenario: Any) -> Any:
    async def run() -> dict[str, Any]:
        return await asyncio.to_thread(scenario)

    return run


run_scenarios(
    {
        "header_continuity": threaded(header_continuity),
        "responses_api": threaded(responses_api),
        "responses_session_header": threaded(responses_session_header),
    }
)
