"""The DynamoDB store on moto: round trips, windows, conflicts, limits, TTL, commit marker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.store.base import NewTurn, SessionKey, TurnTooLarge
from core.store.dynamodb import DynamoDBSessionStore, session_pk
from tests.conftest import table_items

KEY = SessionKey(owner="alice", session_id="s-1")


def turn(*texts: str, system: str = "") -> NewTurn:
    roles = ["user", "assistant"]
    return NewTurn(
        messages=[{"role": roles[i % 2], "content": text} for i, text in enumerate(texts)],
        system=[{"role": "system", "content": system}] if system else [],
        title=texts[0] if texts else "",
    )


@pytest.fixture
def store(moto_table: tuple[Any, str]) -> DynamoDBSessionStore:
    client, name = moto_table
    return DynamoDBSessionStore(name, ttl_days=30, client=client)


async def test_a_missing_session_reads_as_empty(store: DynamoDBSessionStore) -> None:
    state = await store.load(KEY, 10)
    assert not state.exists and state.messages == [] and state.head is None


async def test_turns_round_trip_in_order_with_the_creators_system_prompt(store: DynamoDBSessionStore) -> None:
    state = await store.load(KEY, 10)
    await store.append(KEY, turn("q1", "a1", system="be brief"), state)
    state = await store.load(KEY, 10)
    await store.append(KEY, turn("q2", "a2", system="ignored: not the creator"), state)
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["q1", "a1", "q2", "a2"]
    assert state.system == [{"role": "system", "content": "be brief"}]
    assert state.message_count == 4


async def test_the_window_returns_only_the_most_recent_messages(store: DynamoDBSessionStore) -> None:
    state = await store.load(KEY, 3)
    for i in range(5):
        await store.append(KEY, turn(f"q{i}", f"a{i}"), state)
        state = await store.load(KEY, 3)
    assert [m["content"] for m in state.messages] == ["a3", "q4", "a4"]
    assert state.message_count == 10


async def test_a_stale_append_is_retried_after_the_winner(store: DynamoDBSessionStore) -> None:
    stale = await store.load(KEY, 10)
    await store.append(KEY, turn("winner-q", "winner-a"), stale)
    result = await store.append(KEY, turn("late-q", "late-a"), stale)
    assert result.conflicts == 1 and result.first_seq == 2
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["winner-q", "winner-a", "late-q", "late-a"]


async def test_owners_do_not_share_sessions(store: DynamoDBSessionStore) -> None:
    await store.append(KEY, turn("mine", "ok"), await store.load(KEY, 10))
    other = SessionKey(owner="mallory", session_id=KEY.session_id)
    assert (await store.load(other, 10)).messages == []


async def test_a_fresh_session_larger_than_one_transaction_is_stored_whole(
    store: DynamoDBSessionStore, moto_table: tuple[Any, str]
) -> None:
    texts = [f"m{i}" for i in range(251)]
    await store.append(KEY, turn(*texts), None, fresh_session=True)
    state = await store.load(KEY, 300)
    assert [m["content"] for m in state.messages] == texts
    client, name = moto_table
    assert len(table_items(client, name)) == 253  # the head, the listing entry and every message


def test_a_continued_turn_must_fit_one_transaction(store: DynamoDBSessionStore) -> None:
    too_many = [{"role": "tool", "tool_call_id": f"c{i}", "content": "r"} for i in range(99)]
    with pytest.raises(TurnTooLarge):
        store.check_turn(too_many, fresh_session=False)
    store.check_turn(too_many, fresh_session=True)


async def test_an_oversized_message_is_refused_before_anything_is_written(
    store: DynamoDBSessionStore, moto_table: tuple[Any, str]
) -> None:
    big = "x" * (400 * 1024)
    with pytest.raises(TurnTooLarge) as caught:
        await store.append(KEY, turn("small", big), await store.load(KEY, 10))
    assert "limit" in caught.value.reason
    client, name = moto_table
    assert table_items(client, name) == []


async def test_messages_beyond_the_commit_marker_are_invisible_and_overwritten(
    store: DynamoDBSessionStore, moto_table: tuple[Any, str]
) -> None:
    await store.append(KEY, turn("q", "a"), await store.load(KEY, 10))
    client, name = moto_table
    client.put_item(  # a message left by a write that never committed its head
        TableName=name,
        Item={
            "pk": {"S": session_pk(KEY)},
            "sk": {"S": "MSG#000000000002"},
            "seq": {"N": "2"},
            "msg": {"S": json.dumps({"role": "user", "content": "orphan"})},
        },
    )
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["q", "a"]
    await store.append(KEY, turn("q2", "a2"), state)
    assert [m["content"] for m in (await store.load(KEY, 10)).messages] == ["q", "a", "q2", "a2"]


async def test_an_expired_session_reads_as_empty_and_restarts_after_its_leftovers(
    moto_table: tuple[Any, str],
) -> None:
    client, name = moto_table
    clock = [1_000_000.0]
    store = DynamoDBSessionStore(name, ttl_days=1, client=client, clock=lambda: clock[0])
    await store.append(KEY, turn("old-q", "old-a", system="old system"), await store.load(KEY, 10))
    clock[0] += 86400 + 1  # past the lifetime; moto, like DynamoDB, has not deleted anything yet
    state = await store.load(KEY, 10)
    assert not state.exists and state.messages == [] and state.system == []
    await store.append(KEY, turn("new-q", "new-a", system="new system"), state)
    state = await store.load(KEY, 10)
    assert [m["content"] for m in state.messages] == ["new-q", "new-a"]
    assert state.system == [{"role": "system", "content": "new system"}]
    assert state.message_count == 2
