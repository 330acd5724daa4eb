"""Recorded answers: the events of a resumable stream, in small batches, and the state
of the run that produces them (docs/storage.md, "Recorded answers").

A log lives in one partition and is named by a `LogKey`: its *state item* (status,
the worker holding the run, its lease, the last sequence number recorded) and its
*batches*, one item per flush, keyed by the batch's LAST sequence number, so that

    Query  pk = :pk AND sk BETWEEN <prefix><first wanted seq> AND <state sk>

returns exactly the batches holding events from the first wanted one on, then the
state item (it sorts after every batch): one request per poll of a follower tells it
both what is new and whether the run is still alive.

Every write of the run is guarded by the state item: a flush is one
`TransactWriteItems` of the batch and an update of the state, conditioned on the run
still being this worker's and in progress. A cancel (or a finaliser of a dead worker)
changes the state, after which the worker's next write is refused: that is how a run
in another container learns it must stop, and why nothing is recorded after a
terminal event.

Batches hold the events' JSON, one per line, zlib-compressed (streamed deltas repeat
their field names and ids: about 6x smaller), in a binary attribute.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.store.base import StoreUnavailable
from core.store.errors import refused_by_condition, store_errors
from core.store.keys import LogKey, number_attr, string_attr

TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})
RUNNING_STATUSES = frozenset({"queued", "in_progress"})


@dataclass(frozen=True)
class RunState:
    status: str
    worker: str | None
    lease_until: float | None
    last_seq: int
    """The last event recorded (-1: none yet)."""
    item: dict[str, Any] = field(repr=False)
    cancel_requested: bool = False
    """Someone asked to cancel the run; its worker ends it at its next write."""
    ended_outside: bool = False
    """Ended by someone else than its worker (`end`): the worker may have handed out
    events it never recorded, under the numbers its last event now has."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def lapsed(self, now: float) -> bool:
        """A run whose worker stopped renewing its lease (it died, or was cut off)."""
        return not self.finished and self.lease_until is not None and self.lease_until < now


@dataclass(frozen=True)
class LogRead:
    events: list[tuple[int, str]]
    """(sequence number, event JSON) in order, from the first wanted one."""
    state: RunState | None
    """None when the log is gone (deleted, expired, never written)."""


class RunRevoked(Exception):
    """The run is no longer this worker's to write (cancelled, deleted, finalised)."""


def parse_state(item: dict[str, Any]) -> RunState:
    return RunState(
        status=item.get("status", {}).get("S", "completed"),
        worker=item["worker"]["S"] if "worker" in item else None,
        lease_until=float(item["lease_until"]["N"]) if "lease_until" in item else None,
        last_seq=int(item["last_seq"]["N"]) if "last_seq" in item else -1,
        item=item,
        cancel_requested="cancel_requested" in item,
        ended_outside="ended_outside" in item,
    )


def encode_batch(events: list[tuple[int, str]]) -> bytes:
    return zlib.compress("\n".join(text for _seq, text in events).encode(), 6)


def decode_batch(item: dict[str, Any]) -> Iterator[tuple[int, str]]:
    first = int(item["first"]["N"])
    lines = zlib.decompress(item["data"]["B"]).decode().split("\n")
    for offset, text in enumerate(lines):
        yield first + offset, text


MAX_BATCH_TEXT = 300_000
"""Bytes of events' JSON in one batch item at most: compressed, always under DynamoDB's
400 KB item limit (a run's last batch repeats the whole answer in its done events)."""


def batch_puts(table: str, key: LogKey, events: list[tuple[int, str]], expires_at: int | None) -> list[dict[str, Any]]:
    """TransactWriteItems `Put`s of `events`, split into batches of at most
    `MAX_BATCH_TEXT` bytes (one event is never split: the largest, a terminal event, is
    bounded by the response's own limit)."""
    puts: list[dict[str, Any]] = []
    start, size = 0, 0
    for index, (_seq, text) in enumerate(events):
        if index > start and size + len(text.encode()) > MAX_BATCH_TEXT:
            puts.append(batch_put(table, key, events[start:index], expires_at))
            start, size = index, 0
        size += len(text.encode())
    if start < len(events):
        puts.append(batch_put(table, key, events[start:], expires_at))
    return puts


def batch_put(table: str, key: LogKey, events: list[tuple[int, str]], expires_at: int | None) -> dict[str, Any]:
    """A TransactWriteItems `Put` of one batch (never over one already written)."""
    item: dict[str, Any] = {
        "pk": string_attr(key.pk),
        "sk": string_attr(key.batch_sk(events[-1][0])),
        "first": number_attr(events[0][0]),
        "data": {"B": encode_batch(events)},
    }
    if expires_at is not None:
        item["expires_at"] = number_attr(expires_at)
    return {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(sk)"}}


def guard(worker: str, *, cancellable: bool = True) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The condition every write of a running worker carries: still its run, still going,
    and (unless it is the write that ends it as cancelled) nobody asked to cancel it."""
    condition = "#worker = :me AND #status = :running"
    if cancellable:
        condition += " AND attribute_not_exists(cancel_requested)"
    return (
        condition,
        {"#worker": "worker", "#status": "status"},
        {":me": string_attr(worker), ":running": string_attr("in_progress")},
    )


class DynamoDBEventLog:
    """Reads and guarded writes of recorded answers, on the sessions table."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    # -- the worker's side ----------------------------------------------------------

    def flush(
        self,
        key: LogKey,
        events: list[tuple[int, str]],
        *,
        worker: str,
        lease_until: float,
        expires_at: int | None,
        status: str | None = None,
        attrs: dict[str, Any] | None = None,
        cancellable: bool = True,
    ) -> None:
        """Record `events` (possibly none: a heartbeat) and renew the lease; with
        `status`, end the run. Raises `RunRevoked` when the run is no longer this
        worker's, or a cancel was asked (unless `cancellable` is False: the write that
        ends it as cancelled): nothing was written then."""
        condition, names, values = guard(worker, cancellable=cancellable)
        sets = {"lease_until": number_attr(round(lease_until, 3)), **(attrs or {})}
        if status is not None:
            sets["status"] = string_attr(status)
        update = self._state_update(key, events, sets, condition, names, values)
        if not events:
            self._update(update)
            return
        try:
            self._transact([{"Update": update}, *batch_puts(self.table_name, key, events, expires_at)], guarded_at=0)
        except StoreUnavailable:
            # Its answer may have been lost after it landed: the retry then finds its own
            # batch there. Landed, the state says so (this worker's, at least this far).
            state = self.get_state(key)
            if state is None or state.worker != worker or state.last_seq < events[-1][0]:
                raise

    def open(
        self,
        key: LogKey,
        *,
        worker: str,
        lease_until: float,
        expires_at: int | None,
        attrs: dict[str, Any],
        also: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write a new run's state item (in progress, held by `worker`), with `also`
        (whole items, such as a pointer to the run) in the same transaction."""
        state: dict[str, Any] = {
            **attrs,
            "pk": string_attr(key.pk),
            "sk": string_attr(key.state_sk),
            "status": string_attr("in_progress"),
            "worker": string_attr(worker),
            "lease_until": number_attr(round(lease_until, 3)),
            "last_seq": number_attr(-1),
        }
        if expires_at is not None:
            state["expires_at"] = number_attr(expires_at)
        items = [
            {"Put": {"TableName": self.table_name, "Item": state, "ConditionExpression": "attribute_not_exists(sk)"}}
        ]
        items += [{"Put": {"TableName": self.table_name, "Item": item}} for item in also or []]
        self._transact(items, guarded_at=len(items))

    def claim(self, key: LogKey, *, worker: str, lease_until: float) -> RunState | None:
        """Take a queued run (a background job). None when it is not queued any more: a
        duplicate or retried invocation, a cancel that came first."""
        try:
            with store_errors():
                reply = self.client.update_item(
                    TableName=self.table_name,
                    Key={"pk": string_attr(key.pk), "sk": string_attr(key.state_sk)},
                    UpdateExpression="SET #worker = :me, #status = :running, lease_until = :lease",
                    ConditionExpression="#status = :queued",
                    ExpressionAttributeNames={"#worker": "worker", "#status": "status"},
                    ExpressionAttributeValues={
                        ":me": string_attr(worker),
                        ":running": string_attr("in_progress"),
                        ":queued": string_attr("queued"),
                        ":lease": number_attr(round(lease_until, 3)),
                    },
                    ReturnValues="ALL_NEW",
                )
        except StoreUnavailable as error:
            if refused_by_condition(error):
                return None
            raise
        return parse_state(reply["Attributes"])

    # -- anyone's side --------------------------------------------------------------

    def request_cancel(self, key: LogKey, seen: RunState) -> bool:
        """Ask the run's worker to end it as cancelled (it does at its next write, within
        `flush_seconds` while it streams, a second when idle). False when the run moved
        on meanwhile (ended, or taken by another worker)."""
        try:
            with store_errors():
                self.client.update_item(
                    TableName=self.table_name,
                    Key={"pk": string_attr(key.pk), "sk": string_attr(key.state_sk)},
                    UpdateExpression="SET cancel_requested = :now",
                    ConditionExpression="#status = :running AND #worker = :seen",
                    ExpressionAttributeNames={"#status": "status", "#worker": "worker"},
                    ExpressionAttributeValues={
                        ":now": number_attr(int(time.time())),
                        ":running": string_attr("in_progress"),
                        ":seen": string_attr(seen.worker or ""),
                    },
                )
        except StoreUnavailable as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    def read(self, key: LogKey, after: int) -> LogRead:
        """The events after sequence number `after`, and the run's state."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :state",
            "ExpressionAttributeValues": {
                ":pk": string_attr(key.pk),
                ":low": string_attr(key.batch_sk(after + 1)),
                ":state": string_attr(key.state_sk),
            },
            "ConsistentRead": True,
        }
        events: list[tuple[int, str]] = []
        state: RunState | None = None
        with store_errors():
            while True:
                page = self.client.query(**request)
                for item in page.get("Items", []):
                    if item["sk"]["S"] == key.state_sk:
                        state = parse_state(item)
                    elif item["sk"]["S"].startswith(key.event_prefix):
                        events.extend(event for event in decode_batch(item) if event[0] > after)
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return LogRead(events=_contiguous(events, after), state=state)

    def get_state(self, key: LogKey) -> RunState | None:
        with store_errors():
            reply = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": string_attr(key.pk), "sk": string_attr(key.state_sk)},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        return parse_state(item) if item is not None else None

    def end(
        self,
        key: LogKey,
        seen: RunState,
        *,
        status: str,
        last_events: list[tuple[int, str]],
        expires_at: int | None,
        attrs: dict[str, Any] | None = None,
    ) -> bool:
        """End a run from outside it (a cancel; a finaliser of a worker whose lease
        lapsed): set `status` and record its last events, on the condition that the
        state is still the one `seen` (same status, same last event, same lease). False
        when it moved meanwhile: read it again and decide again."""
        names = {"#status": "status"}
        values: dict[str, Any] = {
            ":seen_status": string_attr(seen.status),
            ":seen_last": number_attr(seen.last_seq),
        }
        condition = "#status = :seen_status AND (last_seq = :seen_last OR attribute_not_exists(last_seq))"
        if seen.lease_until is not None:
            condition += " AND lease_until = :seen_lease"
            values[":seen_lease"] = number_attr(seen.lease_until)
        sets = {"status": string_attr(status), "ended_outside": {"BOOL": True}, **(attrs or {})}
        update = self._state_update(key, last_events, sets, condition, names, values, remove="lease_until")
        items: list[dict[str, Any]] = [{"Update": update}]
        if last_events:
            items.extend(batch_puts(self.table_name, key, last_events, expires_at))
        try:
            self._transact(items, guarded_at=0)
        except RunRevoked:
            return False
        return True

    def delete_log(self, key: LogKey) -> None:
        """Every batch of the log (the state item is its owner's to delete)."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": string_attr(key.pk), ":prefix": string_attr(key.event_prefix)},
            "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        from core.store.deletion import batch_delete

        with store_errors():
            while True:
                page = self.client.query(**request)
                item_keys = [{"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", [])]
                for start in range(0, len(item_keys), 25):
                    batch_delete(self.client, self.table_name, item_keys[start : start + 25])
                if "LastEvaluatedKey" not in page:
                    return
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- internals ------------------------------------------------------------------

    def _state_update(
        self,
        key: LogKey,
        events: list[tuple[int, str]],
        sets: dict[str, Any],
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        *,
        remove: str | None = None,
    ) -> dict[str, Any]:
        """An `Update` of the run's state item: `sets` (attribute names to values, every
        name through a placeholder: `status` is a reserved word), `last_seq` moved to the
        last of `events` when there are any, on `condition`."""
        if events:
            sets = {**sets, "last_seq": number_attr(events[-1][0])}
        clauses = []
        for index, (name, value) in enumerate(sets.items()):
            names = {**names, f"#s{index}": name}
            values = {**values, f":s{index}": value}
            clauses.append(f"#s{index} = :s{index}")
        return {
            "TableName": self.table_name,
            "Key": {"pk": string_attr(key.pk), "sk": string_attr(key.state_sk)},
            "UpdateExpression": "SET " + ", ".join(clauses) + (f" REMOVE {remove}" if remove else ""),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _update(self, update: dict[str, Any]) -> None:
        try:
            with store_errors():
                self.client.update_item(**update)
        except StoreUnavailable as error:
            if refused_by_condition(error):
                raise RunRevoked() from None
            raise

    def _transact(self, items: list[dict[str, Any]], *, guarded_at: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            reasons = error.response.get("CancellationReasons") or []
            if len(reasons) > guarded_at and reasons[guarded_at].get("Code") == "ConditionalCheckFailed":
                raise RunRevoked() from None
            raise StoreUnavailable("could not record the answer's events") from error
        except BotoCoreError as error:
            raise StoreUnavailable("could not record the answer's events") from error


def _contiguous(events: list[tuple[int, str]], after: int) -> list[tuple[int, str]]:
    """The events from `after + 1` on without a gap (a batch not yet visible ends them)."""
    events.sort(key=lambda event: event[0])
    result: list[tuple[int, str]] = []
    expected = after + 1
    for seq, text in events:
        if seq < expected:
            continue
        if seq != expected:
            break
        result.append((seq, text))
        expected += 1
    return result


def event_json(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
