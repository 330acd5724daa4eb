"""The recorded-answer log on DynamoDB Local (`core.store.events`): what followers read,
and the guard that keeps a cancelled or finished run from writing."""

from __future__ import annotations

from typing import Any

import pytest

from core.store.events import DynamoDBEventLog, RunRevoked
from core.store.keys import response_log

KEY = response_log("RESPONSE#alice#resp_test")


@pytest.fixture
def log(local_table: tuple[Any, str]) -> DynamoDBEventLog:
    client, name = local_table
    event_log = DynamoDBEventLog(client, name)
    event_log.open(KEY, worker="w1", lease_until=10**10, expires_at=None, attrs={})
    return event_log


def batch(first: int, last: int) -> list[tuple[int, str]]:
    return [(seq, f'{{"n":{seq}}}') for seq in range(first, last + 1)]


def test_a_follower_reads_exactly_the_events_after_the_one_it_has(log: DynamoDBEventLog) -> None:
    log.flush(KEY, batch(0, 4), worker="w1", lease_until=10**10, expires_at=None)
    log.flush(KEY, batch(5, 5), worker="w1", lease_until=10**10, expires_at=None)
    log.flush(KEY, batch(6, 9), worker="w1", lease_until=10**10, expires_at=None)
    for after in (-1, 0, 3, 4, 5, 8, 9):
        read = log.read(KEY, after)
        assert [seq for seq, _ in read.events] == list(range(after + 1, 10))
        assert read.state is not None and read.state.last_seq == 9 and read.state.status == "in_progress"
    assert log.read(KEY, 2).events[0] == (3, '{"n":3}')


def test_a_batch_is_written_once_and_a_retry_of_a_landed_flush_is_taken_as_landed(log: DynamoDBEventLog) -> None:
    """A flush whose answer was lost after it landed is sent again with the same events:
    it finds its batch there and the state past it, and takes it as written."""
    log.flush(KEY, batch(0, 2), worker="w1", lease_until=10**10, expires_at=None)
    log.flush(KEY, [(2, '{"n":"again"}')], worker="w1", lease_until=10**10, expires_at=None)
    assert log.read(KEY, -1).events == batch(0, 2)
    with pytest.raises(RunRevoked):  # and another worker may not write at all
        log.flush(KEY, [(3, '{"n":"other"}')], worker="w2", lease_until=10**10, expires_at=None, cancellable=False)


def test_after_a_cancel_request_only_the_ending_write_is_taken(log: DynamoDBEventLog) -> None:
    log.flush(KEY, batch(0, 1), worker="w1", lease_until=10**10, expires_at=None)
    state = log.get_state(KEY)
    assert state is not None and log.request_cancel(KEY, state)
    with pytest.raises(RunRevoked):
        log.flush(KEY, batch(2, 2), worker="w1", lease_until=10**10, expires_at=None)
    with pytest.raises(RunRevoked):  # another worker may not end it
        log.flush(KEY, batch(2, 2), worker="w2", lease_until=0, expires_at=None, status="cancelled", cancellable=False)
    log.flush(KEY, batch(2, 3), worker="w1", lease_until=0, expires_at=None, status="cancelled", cancellable=False)
    read = log.read(KEY, -1)
    assert [seq for seq, _ in read.events] == [0, 1, 2, 3]
    assert read.state is not None and read.state.status == "cancelled" and read.state.finished
    with pytest.raises(RunRevoked):  # nothing after the end
        log.flush(KEY, batch(4, 4), worker="w1", lease_until=10**10, expires_at=None, cancellable=False)


def test_ending_from_outside_holds_only_on_the_state_it_read(log: DynamoDBEventLog) -> None:
    log.flush(KEY, batch(0, 1), worker="w1", lease_until=10**10, expires_at=None)
    seen = log.get_state(KEY)
    assert seen is not None
    log.flush(KEY, batch(2, 2), worker="w1", lease_until=10**10, expires_at=None)  # the worker moved on
    assert not log.end(KEY, seen, status="failed", last_events=[(2, '{"end":1}')], expires_at=None)
    current = log.get_state(KEY)
    assert current is not None
    assert log.end(KEY, current, status="failed", last_events=[(3, '{"end":1}')], expires_at=None)
    ended = log.read(KEY, 1)
    assert ended.events == [(2, '{"n":2}'), (3, '{"end":1}')]
    assert ended.state is not None and ended.state.ended_outside and ended.state.status == "failed"


def test_a_queued_run_is_claimed_once(local_table: tuple[Any, str]) -> None:
    client, name = local_table
    event_log = DynamoDBEventLog(client, name)
    key = response_log("RESPONSE#alice#resp_queued")
    client.put_item(
        TableName=name,
        Item={"pk": {"S": key.pk}, "sk": {"S": key.state_sk}, "status": {"S": "queued"}, "last_seq": {"N": "-1"}},
    )
    first = event_log.claim(key, worker="w1", lease_until=10**10)
    assert first is not None and first.worker == "w1" and first.status == "in_progress"
    assert event_log.claim(key, worker="w2", lease_until=10**10) is None


def test_a_burst_larger_than_an_item_is_recorded_in_several_batches(log: DynamoDBEventLog) -> None:
    """A run's last write repeats the whole answer in its done events: over DynamoDB's
    400 KB item limit even compressed, when the text does not compress."""
    import secrets

    events = [(seq, '{"text":"' + secrets.token_hex(60_000) + '"}') for seq in range(6)]  # 720 KB of hex
    log.flush(KEY, events, worker="w1", lease_until=10**10, expires_at=None)
    assert log.read(KEY, -1).events == events


async def test_a_chat_turn_guarded_by_its_run_is_not_stored_once_a_cancel_was_asked(
    local_table: tuple[Any, str], log: DynamoDBEventLog
) -> None:
    from core.store.base import NewTurn, RunGuard, SessionKey
    from core.store.dynamodb import DynamoDBSessionStore

    client, name = local_table
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    key = SessionKey(owner="alice", session_id="s1")
    turn = NewTurn(
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], system=[], title="hi"
    )
    run_guard = RunGuard(pk=KEY.pk, state_sk=KEY.state_sk, worker="w1")
    await store.append(key, turn, None, fresh_session=True, run_guard=run_guard)
    state = log.get_state(KEY)
    assert state is not None and log.request_cancel(KEY, state)
    with pytest.raises(RunRevoked):
        await store.append(key, turn, None, run_guard=run_guard)
    assert (await store.load(key, 10)).message_count == 2


async def test_a_run_whose_own_last_write_is_refused_ends_without_cancelling_its_waiters(
    local_table: tuple[Any, str], log: DynamoDBEventLog
) -> None:
    """The run's own task learns it lost the run (here: its lease was taken by a reader);
    whoever waits for it (the Lambda runtime, before its next invocation) sees it end."""
    from core.resumable import runs
    from core.resumable.recorder import Recorder, RecordingPolicy

    async def answer() -> Any:
        yield {"n": 0}
        state = log.get_state(KEY)
        assert state is not None and log.end(KEY, state, status="failed", last_events=[], expires_at=None)
        yield {"n": 1}

    recorder = Recorder(log, KEY, worker="w1", expires_at=None, policy=RecordingPolicy(flush_seconds=5))
    counter = iter(range(10))
    run = runs.start(
        answer(), recorder, seq_of=lambda _e: next(counter), ending=lambda _last: ("completed", {}), keep_alive=False
    )
    await run.wait()
    assert recorder.revoked
    state = log.get_state(KEY)
    assert state is not None and state.status == "failed"
