"""The response store's access patterns on moto: a session read "up to a position",
response and conversation items, their conditions and their expiry."""

from __future__ import annotations

from typing import Any

import pytest

from core.store.base import NewTurn, SessionKey, TurnTooLarge
from core.store.dynamodb import DynamoDBSessionStore
from core.store.responses import ConversationPointer, DynamoDBResponseStore, StoredResponse
from tests.legacy import write_conversation_pointer
from tests.unit.test_responses_api import CountingClient

KEY = SessionKey(owner="alice", session_id="s-1")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counting(moto_table: tuple[Any, str]) -> CountingClient:
    return CountingClient(moto_table[0])


@pytest.fixture
def sessions(moto_table: tuple[Any, str], counting: CountingClient, clock: Clock) -> DynamoDBSessionStore:
    return DynamoDBSessionStore(moto_table[1], ttl_days=1, client=counting, clock=clock)


@pytest.fixture
def store(sessions: DynamoDBSessionStore) -> DynamoDBResponseStore:
    return DynamoDBResponseStore(sessions)


def msg(n: int) -> dict[str, Any]:
    return {"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"}


async def fill(sessions: DynamoDBSessionStore, count: int, key: SessionKey = KEY) -> None:
    """`count` messages in turns of two."""
    for start in range(0, count, 2):
        state = await sessions.load(key, 1)
        turn = NewTurn(messages=[msg(start), msg(start + 1)], system=[], title="t")
        await sessions.append(key, turn, state, fresh_session=start == 0)


def seed(store: DynamoDBResponseStore, owner: str, response: StoredResponse) -> None:
    """A stored response item, as a turn's transaction writes it."""
    store.client.put_item(TableName=store.table_name, Item=store._response_item(owner, response))


def contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


async def test_the_tip_is_one_query_of_the_head_and_the_window(
    sessions: DynamoDBSessionStore, store: DynamoDBResponseStore, counting: CountingClient
) -> None:
    await fill(sessions, 20)
    counting.calls.clear()
    chain = await store.load_history(KEY, 20, 6)
    assert counting.calls == {"query": 1}
    assert chain.usable and chain.is_tip and chain.earlier
    assert contents(chain.messages) == [f"m{n}" for n in range(14, 20)]


async def test_a_short_session_is_read_whole(sessions: DynamoDBSessionStore, store: DynamoDBResponseStore) -> None:
    await fill(sessions, 4)
    chain = await store.load_history(KEY, 4, 40)
    assert chain.is_tip and not chain.earlier
    assert contents(chain.messages) == ["m0", "m1", "m2", "m3"]


@pytest.mark.parametrize("position", [2, 6, 10, 14, 18])
async def test_an_earlier_position_reads_the_window_before_it_in_at_most_two_queries(
    sessions: DynamoDBSessionStore, store: DynamoDBResponseStore, counting: CountingClient, position: int
) -> None:
    await fill(sessions, 20)
    counting.calls.clear()
    chain = await store.load_history(KEY, position, 6)
    assert counting.calls["query"] <= 2
    assert chain.usable and not chain.is_tip
    assert contents(chain.messages) == [f"m{n}" for n in range(max(0, position - 6), position)]
    assert chain.earlier == (position > 6)


async def test_a_missing_or_expired_session_is_not_usable(
    sessions: DynamoDBSessionStore, store: DynamoDBResponseStore, clock: Clock
) -> None:
    chain = await store.load_history(KEY, 2, 10)
    assert chain.head is None and not chain.usable and not chain.is_tip
    await fill(sessions, 2)
    assert (await store.load_history(KEY, 2, 10)).usable
    assert not (await store.load_history(KEY, 3, 10)).usable  # beyond what was committed
    clock.now += 2 * 86400
    assert not (await store.load_history(KEY, 2, 10)).usable


async def test_a_position_from_an_earlier_life_of_the_id_is_not_usable(
    sessions: DynamoDBSessionStore, store: DynamoDBResponseStore, clock: Clock
) -> None:
    await fill(sessions, 4)
    clock.now += 2 * 86400
    state = await sessions.load(KEY, 1)  # expired: the next turn re-creates it after the old messages
    await sessions.append(KEY, NewTurn(messages=[msg(0), msg(1)], system=[], title="t"), state)
    assert not (await store.load_history(KEY, 4, 10)).usable
    chain = await store.load_history(KEY, 6, 10)
    assert chain.is_tip and contents(chain.messages) == ["m0", "m1"] and not chain.earlier


def stored(
    response_id: str, session_id: str = "s-1", position: int = 2, expires_at: int | None = None
) -> StoredResponse:
    return StoredResponse(
        response_id=response_id,
        session_id=session_id,
        position=position,
        created_at=1.0,
        expires_at=expires_at,
        body={"id": response_id, "object": "response"},
    )


async def test_responses_are_keyed_by_owner_and_expire(
    store: DynamoDBResponseStore, clock: Clock, counting: CountingClient
) -> None:
    seed(store, "alice", stored("resp_a", expires_at=int(clock.now) + 10))
    got = await store.get_response("alice", "resp_a")
    assert got is not None and got.session_id == "s-1" and got.position == 2 and got.body["id"] == "resp_a"
    assert await store.get_response("bob", "resp_a") is None
    assert not await store.delete_response("bob", "resp_a")
    clock.now += 20
    assert await store.get_response("alice", "resp_a") is None
    assert not await store.delete_response("alice", "resp_a")  # expired: as if gone


async def test_delete_is_one_conditional_write(store: DynamoDBResponseStore, counting: CountingClient) -> None:
    seed(store, "alice", stored("resp_a"))
    counting.calls.clear()
    assert await store.delete_response("alice", "resp_a")
    assert counting.calls == {"delete_item": 1}
    assert not await store.delete_response("alice", "resp_a")


async def test_a_conversation_pointer_of_the_earlier_design_is_read_until_it_expires(
    store: DynamoDBResponseStore, sessions: DynamoDBSessionStore, clock: Clock
) -> None:
    pointer = ConversationPointer("c", "r1", "s", 2, expires_at=int(clock.now) + 5)
    write_conversation_pointer(sessions.client, sessions.table_name, "alice", pointer)
    assert await store.get_conversation("alice", "c") == pointer
    assert await store.get_conversation("bob", "c") is None
    clock.now += 10
    assert await store.get_conversation("alice", "c") is None


def test_a_response_body_too_large_for_an_item_is_refused(store: DynamoDBResponseStore) -> None:
    store.check_response({"output": "x" * 1000})
    with pytest.raises(TurnTooLarge):
        store.check_response({"output": "x" * 410_000})


def test_new_sessions_expire_with_the_ttl(sessions: DynamoDBSessionStore, store: DynamoDBResponseStore) -> None:
    assert store.new_session_expiry() == int(sessions.clock()) + 86400
    forever = DynamoDBResponseStore(DynamoDBSessionStore(sessions.table_name, ttl_days=0, client=sessions.client))
    assert forever.new_session_expiry() is None
