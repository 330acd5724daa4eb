"""Where DynamoDB traffic lands: record the partition of every read and write a client
makes, and simulate a principal with many sessions to find its hottest partition.

`PartitionRecorder` hooks botocore's `before-parameter-build` event, so it sees the requests the
store really sends (through the same client, retries aside) and attributes each item
written or read to its partition: `table:<pk>`, or `gsi1:<gsi1pk>` for the owner index
(an item written with index keys is a write to that index partition too).

`simulate()` drives many sessions of one principal on a real table (DynamoDB Local in
tests and `make bench`) through the store's own turn protocol (one load, one append),
on a simulated clock, and reports the largest share of the writes that any one
partition received in a second of simulated time. `design="earlier"` runs the key
design before issue 14 (the head carries the owner index keys and rewrites them every
turn) next to the current one, in the same run.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from core.store.base import NewTurn, SessionKey
from core.store.dynamodb import DynamoDBSessionStore
from core.store.listing import index_sort_key

_EQUALS = re.compile(r"(\w+)\s*=\s*(:\w+)")


def _partition_of_query(params: dict[str, Any]) -> str:
    values = params.get("ExpressionAttributeValues", {})
    for name, placeholder in _EQUALS.findall(params.get("KeyConditionExpression", "")):
        if name in {"pk", "gsi1pk"}:
            prefix = "gsi1" if params.get("IndexName") else "table"
            return f"{prefix}:{values[placeholder]['S']}"
    return "table:?"


def _written(item: dict[str, Any]) -> list[str]:
    partitions = [f"table:{item['pk']['S']}"]
    if "gsi1pk" in item:
        partitions.append(f"gsi1:{item['gsi1pk']['S']}")
    return partitions


class PartitionRecorder:
    """Counts items written and read per partition, in buckets the caller names."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bucket: int = 0
        self.writes: dict[int, Counter[str]] = {}
        self.reads: dict[int, Counter[str]] = {}
        self._lock = threading.Lock()
        self._id = f"partition-recorder-{id(self)}"

    def __enter__(self) -> PartitionRecorder:
        self.client.meta.events.register("before-parameter-build.dynamodb", self._record, unique_id=self._id)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.meta.events.unregister("before-parameter-build.dynamodb", unique_id=self._id)

    def _record(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        writes: list[str] = []
        reads: list[str] = []
        operation = model.name
        if operation == "PutItem":
            writes += _written(params["Item"])
        elif operation in {"UpdateItem", "DeleteItem"}:
            writes.append(f"table:{params['Key']['pk']['S']}")
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                if "Put" in entry:
                    writes += _written(entry["Put"]["Item"])
                elif "ConditionCheck" in entry:
                    reads.append(f"table:{entry['ConditionCheck']['Key']['pk']['S']}")
                else:
                    action = entry.get("Update") or entry.get("Delete") or {}
                    writes.append(f"table:{action['Key']['pk']['S']}")
        elif operation == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    if "PutRequest" in request:
                        writes += _written(request["PutRequest"]["Item"])
                    else:
                        writes.append(f"table:{request['DeleteRequest']['Key']['pk']['S']}")
        elif operation == "GetItem":
            reads.append(f"table:{params['Key']['pk']['S']}")
        elif operation == "BatchGetItem":
            for request in params["RequestItems"].values():
                reads += [f"table:{key['pk']['S']}" for key in request["Keys"]]
        elif operation == "Query":
            reads.append(_partition_of_query(params))
        with self._lock:
            self.writes.setdefault(self.bucket, Counter()).update(writes)
            self.reads.setdefault(self.bucket, Counter()).update(reads)


class EarlierDesignStore(DynamoDBSessionStore):
    """The key design before issue 14, for comparison only: no listing entry; the head
    carries `gsi1pk = OWNER#<owner>` and a new `gsi1sk` at every turn."""

    def _listing_entry(self, *args: Any) -> dict[str, Any] | None:
        return None

    def _head_item(self, key: SessionKey, pk: str, **fields: Any) -> dict[str, Any]:
        item = super()._head_item(key, pk, **fields)
        item["gsi1pk"] = {"S": f"OWNER#{key.owner}"}
        item["gsi1sk"] = {"S": index_sort_key(fields["updated_at"], key.session_id)}
        return item


@dataclass
class Share:
    """The hottest partition's share of a second's writes, over the seconds measured."""

    worst: float
    median: float
    worst_partition: str
    seconds: int
    writes: int

    def describe(self) -> str:
        kind = "owner index" if self.worst_partition.startswith("gsi1:") else "a session"
        return (
            f"worst {self.worst:.2%} ({kind}), median {self.median:.2%} over {self.seconds} s, {self.writes:,} writes"
        )


@dataclass
class SimulationResult:
    design: str
    sessions: int
    turns: int
    steady: Share
    overall: Share
    index_writes_per_turn: float
    listing_ordered: bool
    wall_seconds: float
    per_second: list[tuple[int, int, float]] = field(default_factory=list)
    """(second, writes, hottest share) for every simulated second."""


def _share(writes: dict[int, Counter[str]], seconds: list[int]) -> Share:
    shares: list[tuple[float, str]] = []
    total = 0
    for second in seconds:
        counts = writes.get(second)
        if not counts:
            continue
        partition, hottest = counts.most_common(1)[0]
        all_writes = sum(counts.values())
        total += all_writes
        shares.append((hottest / all_writes, partition))
    worst = max(shares)
    return Share(
        worst=worst[0],
        median=statistics.median(s for s, _ in shares),
        worst_partition=worst[1],
        seconds=len(shares),
        writes=total,
    )


async def simulate(
    client: Any,
    table: str,
    *,
    design: str = "current",
    sessions: int = 1000,
    turns_per_session: int = 20,
    ramp_seconds: float = 5.0,
    gap_seconds: tuple[float, float] = (1.0, 3.0),
    concurrency: int = 24,
    seed: int = 7,
    owner: str = "one-principal",
    start: float = 2_000_000_000.0,
) -> SimulationResult:
    """Every session starts within `ramp_seconds` and then makes a turn every
    `gap_seconds` (uniform) of simulated time. Turns are played second by second;
    within a second, up to `concurrency` at once, each on its own simulated clock."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible schedule, not a secret)
    schedule: list[tuple[float, int, int]] = []
    for session in range(sessions):
        at = rng.uniform(0, ramp_seconds)
        for turn in range(turns_per_session):
            schedule.append((at, session, turn))
            at += rng.uniform(*gap_seconds)
    schedule.sort()
    store_class = EarlierDesignStore if design == "earlier" else DynamoDBSessionStore
    first_turn: dict[int, float] = {}
    last_turn: dict[int, float] = {}
    for at, session, _turn in schedule:
        first_turn.setdefault(session, at)
        last_turn[session] = at
    # "Every session active": after the last one started, before the first one ended.
    steady_from, steady_until = max(first_turn.values()), min(last_turn.values())

    loop = asyncio.get_running_loop()
    wall = loop.time()
    limiter = asyncio.Semaphore(concurrency)

    async def play(at: float, session: int, turn: int) -> None:
        async with limiter:
            store = store_class(table, ttl_days=30, client=client, clock=lambda: start + at)
            key = SessionKey(owner, f"session-{session:05d}")
            state = await store.load(key, 40)
            message = {"role": "user", "content": f"turn {turn} of session {session}"}
            reply = {"role": "assistant", "content": f"reply {turn}"}
            await store.append(key, NewTurn(messages=[message, reply], system=[], title=message["content"]), state)

    with PartitionRecorder(client) as recorder:
        index = 0
        while index < len(schedule):
            second = int(schedule[index][0])
            batch = []
            while index < len(schedule) and int(schedule[index][0]) == second:
                batch.append(schedule[index])
                index += 1
            recorder.bucket = second
            await asyncio.gather(*(play(*entry) for entry in batch))
    seconds = sorted(recorder.writes)
    steady_seconds = [s for s in seconds if s >= steady_from and s + 1 <= steady_until]
    index_writes = sum(n for counts in recorder.writes.values() for p, n in counts.items() if p.startswith("gsi1:"))

    # The listing a user sees afterwards: every session once, newest activity first.
    reader = DynamoDBSessionStore(table, ttl_days=30, client=client, clock=lambda: start + schedule[-1][0])
    last_activity = {session: start + at for session, at in last_turn.items()}
    listed: list[str] = []
    after: str | None = None
    while True:
        page = await reader.list_sessions(owner, limit=100, after=after)
        listed += [summary.session_id for summary in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    expected = [f"session-{s:05d}" for s in sorted(last_activity, key=lambda s: -last_activity[s])]
    ordered = sorted(listed) == sorted(expected) and _roughly_ordered(
        listed, last_activity, 0.0 if design == "earlier" else reader.listing_interval
    )

    return SimulationResult(
        design=design,
        sessions=sessions,
        turns=len(schedule),
        steady=_share(recorder.writes, steady_seconds),
        overall=_share(recorder.writes, seconds),
        index_writes_per_turn=index_writes / len(schedule),
        listing_ordered=ordered,
        wall_seconds=loop.time() - wall,
        per_second=[(s, sum(recorder.writes[s].values()), _share(recorder.writes, [s]).worst) for s in seconds],
    )


def _roughly_ordered(listed: list[str], last_turn: dict[int, float], interval: float) -> bool:
    """Newest first, at the listing's resolution: no session is listed above one whose
    last turn came more than `interval` later."""
    times = [last_turn[int(session_id.removeprefix("session-"))] for session_id in listed]
    bound = interval * 1.5  # the interval, stretched by up to half of it per session
    return all(
        times[i] + bound + 1.0 >= times[j] for i in range(len(times)) for j in range(i + 1, min(len(times), i + 50))
    )
