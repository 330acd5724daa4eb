"""OpenAI's Agents SDK for Python (`openai-agents`) against Threadline, as its docs show it."""

from __future__ import annotations

from typing import Any

from agents import (
    Agent,
    OpenAIConversationsSession,
    Runner,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent
from report import run_scenarios, server_from_env

base_url, api_key = server_from_env()
client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
set_default_openai_client(client, use_for_tracing=False)
set_tracing_disabled(True)
# The agent's instructions reach the model as one more (system) message.
agent = Agent(name="Assistant", instructions="Answer briefly.", model="echo")


async def previous_response_id() -> dict[str, Any]:
    """Runs chained with previous_response_id; the last one streamed."""
    first = await Runner.run(agent, "hello")
    second = await Runner.run(agent, "again", previous_response_id=first.last_response_id)
    streamed = Runner.run_streamed(agent, "and again", previous_response_id=second.last_response_id)
    deltas = ""
    async for event in streamed.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            deltas += event.data.delta
    return {
        "replies": [first.final_output, second.final_output, streamed.final_output],
        "streamed_deltas": deltas,
        "response_ids": [first.last_response_id, second.last_response_id, streamed.last_response_id],
    }


async def input_list() -> dict[str, Any]:
    """The SDK's manual loop: the last run's items as the next run's input."""
    first = await Runner.run(agent, "hello")
    second = await Runner.run(agent, [*first.to_input_list(), {"role": "user", "content": "again"}])
    return {"replies": [first.final_output, second.final_output]}


# -- what needs the stateful surface (tests/clients/test_clients_stateful.py) --


async def conversations_session() -> dict[str, Any]:
    """OpenAIConversationsSession over two runs, then the session's items as the SDK reads them."""
    session = OpenAIConversationsSession(openai_client=client)
    first = await Runner.run(agent, "hello", session=session)
    second = await Runner.run(agent, "again", session=session)
    items = await session.get_items()
    return {
        "conversation_id": session.session_id,
        "replies": [first.final_output, second.final_output],
        "items": [{"type": item.get("type"), "role": item.get("role"), "id": item.get("id")} for item in items],
    }


async def conversation_id() -> dict[str, Any]:
    """A server-side conversation named on each run (conversation_id), created with the SDK's client."""
    conversation = await client.conversations.create()
    first = await Runner.run(agent, "hello", conversation_id=conversation.id)
    second = await Runner.run(agent, "again", conversation_id=conversation.id)
    return {"conversation_id": conversation.id, "replies": [first.final_output, second.final_output]}


run_scenarios(
    {
        "previous_response_id": previous_response_id,
        "input_list": input_list,
        "conversations_session": conversations_session,
        "conversation_id": conversation_id,
    }
)
