"""The session store on DynamoDB: the turn protocol (one read, one conditional
transaction per turn) and the session's own reads and writes.

The key design is docs/storage.md, its keys `core.store.keys`; items are read and
written by `core.store.codec`; the other access patterns have a module each: the owner
index (`listing`), partition reads (`reads`), deletion (`deletion`), stored responses
(`responses`), the table itself (`table`), DynamoDB's failures (`errors`).

A session's items, keyed by `pk` (partition) and `sk` (sort):

    pk = SESSION#<owner>#<session id>
      sk = SESSION           the head: next_seq, base_seq, created/updated times, the
                             session's system prompt, its title, expires_at, listed_at
      sk = LISTING           the session's entry in the owner index (`core.store.listing`),
                             moved at most once per LISTING_INTERVAL_SECONDS
      sk = LINK#<pk>         names an item elsewhere that holds the session's content
      sk = MSG#<seq:012d>    one message (its OpenAI JSON), with seq and expires_at
      sk = MSG#SUMMARY       the latest summary of earlier messages (`core.store.summaries`)
      sk = COMPACTION#<seq>  every summary written, for the message listing

- Read: one strongly consistent, descending Query on the partition's `MSG#`..`SESSION`
  range, Limit = window + 2. `SESSION` sorts after every `MSG#` key, so the head comes
  first, then the latest summary (`MSG#SUMMARY`, when there is one), then the newest
  messages; `LastEvaluatedKey` is followed when the 1 MB page
  cap cuts the window.
  The cost of a read depends on the window, never on the session's length.
- Write: one TransactWriteItems per turn: a Put of the head conditioned on the
  `next_seq` that was read (or on its absence), plus a Put per message (and the
  listing entry when it moves, and whatever a face adds: `ExtraWrite`). The head's
  `next_seq` is the commit marker: messages at or beyond it are invisible, so
  concurrent turns on one session never interleave (the loser of a race is retried
  after the winner's messages) and nothing half-written is ever read.
- TTL: every item carries `expires_at`, fixed when the session is created (a session
  lives SESSION_TTL_DAYS from its creation). DynamoDB deletes expired items lazily,
  so reads drop them too. A session re-created under an expired or deleted id numbers
  its messages after every item the old life left (`base_seq`, learned from the same
  read), so leftovers are never read as its own, even when TTL took the head first.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio

from core.items import item_prefixes, mint_ids
from core.store import keys, summaries
from core.store.base import (
    AppendResult,
    Head,
    InvalidCursor,
    NewTurn,
    Page,
    RunGuard,
    SessionKey,
    SessionState,
    SessionSummary,
    StoredMessage,
    StoreUnavailable,
    Summary,
    TurnTooLarge,
    UsageTotals,
)
from core.store.codec import head_item, is_expired, message_item, parse_head, stored_message
from core.store.deletion import delete_partition
from core.store.errors import refused_by_condition, store_errors, unless_refused
from core.store.events import RunRevoked, guard
from core.store.keys import (
    FIRST_MESSAGE_SK,
    HEAD_SK,
    SUMMARY_SK,
    message_sk,
    number_attr,
    string_attr,
)
from core.store.listing import OwnerListing, listing_item, shard_of
from core.store.reads import query_newest_first
from core.store.table import ensure_table

__all__ = [
    "HEAD_SK",
    "ID_BYTES",
    "MAX_ITEM_BYTES",
    "MESSAGE_OVERHEAD_BYTES",
    "DynamoDBSessionStore",
    "ExtraWrite",
    "ensure_table",
    "query_newest_first",
    "session_pk",
]

MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item limit, attribute names included."""
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
MAX_TURN_MESSAGES = MAX_TRANSACTION_ITEMS - 5
"""A continued turn is one transaction: the head, its input, the reply, the listing entry
when it moves, and a stored response with its link."""
MAX_TURN_INPUT_BYTES = 4 * 1024 * 1024 - 2 * 400 * 1024 - 64 * 1024
"""What a continued turn's input may take of a transaction's 4 MB: room is left for the
reply and a stored response (an item each, at most) and the head."""
MAX_APPEND_ATTEMPTS = 40
"""How often a session deletion goes round when turns keep arriving."""
APPEND_DEADLINE_SECONDS = 10.0
"""How long a turn keeps retrying after concurrent turns won the race."""
UNREAD_FLOOR_PER_SECOND = 100
"""Where a new life starts when its partition's leftovers cannot be read: the clock in
seconds times this (12 digits until the year 2286)."""
DEFAULT_LISTING_SHARDS = 16
"""Index partitions per principal (LISTING_SHARDS); docs/scale.md says when to raise it."""
DEFAULT_LISTING_INTERVAL = 30.0
"""Seconds of activity a session's listing entry waits before it moves again
(LISTING_INTERVAL_SECONDS): the listing's order has this resolution."""
ID_BYTES = 60
"""One item id in a message item's `ids` (a response's output id is 54 characters)."""
MESSAGE_OVERHEAD_BYTES = 400
"""Bytes of a message item besides its JSON, at most: attribute names, the key (a
128-character session id and an owner make a pk of about 170 bytes), the numbers
and the commit token."""


def session_pk(key: SessionKey) -> str:
    return keys.session_pk(key.owner, key.session_id)


def _message_bytes(message: dict[str, Any]) -> int:
    """A message item's size at most: its JSON, the attributes besides it, and its item ids."""
    ids = ID_BYTES * len(item_prefixes(message)) if "role" in message else 0
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()) + MESSAGE_OVERHEAD_BYTES + ids


def _ids_of(turn: NewTurn, index: int, seq: int) -> list[str]:
    """The item ids of the turn's message `index`, stored at `seq`: the ones the face gave
    (a response's output ids), else new stored ids."""
    given = turn.item_ids[index] if turn.item_ids is not None and index < len(turn.item_ids) else []
    return given or mint_ids(turn.messages[index], seq)


class _Conflict(Exception):
    """The head changed since it was read; carries the current one when DynamoDB returned it."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        super().__init__("session head changed")
        self.current = current


class _OptionalRefused(Exception):
    """An optional item's own condition cancelled the transaction; nothing was written."""


@dataclass(frozen=True)
class ExtraWrite:
    """An item written in a turn's transaction besides its messages and head."""

    transact_item: dict[str, Any]
    """A TransactWriteItems entry (`Put`, `Delete`, ...)."""
    optional: bool = False
    """When its own condition fails, the turn is stored without it instead of failing."""
    guard: bool = False
    """When its own condition fails, the turn is not stored and `RunRevoked` is raised:
    the write of a recorded run that was cancelled meanwhile (`core.store.events`)."""


ExtraWrites = Callable[[int, int | None], list[ExtraWrite]]
"""Given the session's position after the turn and its expiry: the extra items."""


class DynamoDBSessionStore:
    def __init__(
        self,
        table_name: str,
        *,
        ttl_days: int,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        listing_shards: int = DEFAULT_LISTING_SHARDS,
        listing_interval: float = DEFAULT_LISTING_INTERVAL,
    ) -> None:
        self.table_name = table_name
        self.ttl_seconds = ttl_days * 86400
        self.listing_shards = listing_shards
        self.listing_interval = listing_interval
        self._client = client
        self.clock = clock
        self._append_locks: weakref.WeakValueDictionary[SessionKey, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def client(self) -> Any:
        if self._client is None:
            from core.store.client import get_dynamodb_client

            self._client = get_dynamodb_client()
        return self._client

    # -- limits --------------------------------------------------------------------

    def check_turn(
        self, messages: list[dict[str, Any]], *, fresh_session: bool, system: list[dict[str, Any]] | None = None
    ) -> None:
        if system and _message_bytes({"system": system}) > MAX_ITEM_BYTES:
            raise TurnTooLarge(
                f"The system prompt is too large to keep with a session (the limit is {MAX_ITEM_BYTES:,} bytes)."
            )
        for message in messages:
            size = _message_bytes(message)
            if size > MAX_ITEM_BYTES:
                raise TurnTooLarge(
                    f"A {message.get('role', '')} message is too large to keep in a session "
                    f"({size:,} bytes stored; the limit is {MAX_ITEM_BYTES:,} bytes per message)."
                )
        if not fresh_session and len(messages) > MAX_TURN_MESSAGES:
            raise TurnTooLarge(
                f"A turn on an existing session can add at most {MAX_TURN_MESSAGES} messages "
                f"before the reply; this one has {len(messages)}."
            )
        if not fresh_session and sum(_message_bytes(message) for message in messages) > MAX_TURN_INPUT_BYTES:
            raise TurnTooLarge(
                f"A turn on an existing session can add at most {MAX_TURN_INPUT_BYTES:,} bytes of messages "
                "before the reply (one DynamoDB transaction holds the turn)."
            )

    # -- read ----------------------------------------------------------------------

    async def load(self, key: SessionKey, window: int) -> SessionState:
        return await anyio.to_thread.run_sync(self._load, key, window)

    def _load(self, key: SessionKey, window: int) -> SessionState:
        items, _ = query_newest_first(
            self.client, self.table_name, session_pk(key), window + 2, between=(FIRST_MESSAGE_SK, HEAD_SK)
        )
        return self._state(items, window)

    def _state(self, items: list[dict[str, Any]], window: int) -> SessionState:
        """The session as read by a newest-first Query of its head and messages."""
        now = self.clock()
        summary_item = next((item for item in items[:2] if item["sk"]["S"] == SUMMARY_SK), None)
        if summary_item is not None:
            items = [item for item in items if item is not summary_item]
        if not items or items[0]["sk"]["S"] != HEAD_SK:
            # No head: never created, deleted, or its head already taken by TTL while
            # messages of that life remain. A new life numbers after all of them.
            floor = int(items[0]["seq"]["N"]) + 1 if items else 0
            if summary_item is not None and "last_seq" in summary_item:
                # An earlier life's summary too: the new life starts above what it covers,
                # so it is never taken for this life's.
                floor = max(floor, int(summary_item["last_seq"]["N"]) + 1)
            return SessionState(fresh_seq=floor)
        head = parse_head(items[0])
        if not head.live(now):
            return SessionState(head=head, fresh_seq=head.next_seq)
        summary, version = summaries.parse_summary(summary_item, head) if summary_item else (None, 0)
        newest_first: list[dict[str, Any]] = []
        for item in items[1:]:
            seq = int(item["seq"]["N"])
            if seq < head.base_seq:
                break  # an earlier, expired life of this id
            if seq >= head.next_seq or is_expired(item, now):
                continue  # never committed, or already past its lifetime
            newest_first.append(json.loads(item["msg"]["S"]))
        messages = newest_first[:window][::-1]
        return SessionState(
            head=head,
            exists=True,
            system=head.system,
            messages=messages,
            message_count=head.next_seq - head.base_seq,
            fresh_seq=head.next_seq,
            summary=summary,
            summary_version=version,
        )

    def _read_tip(self, key: SessionKey) -> SessionState:
        """The head and where a new life would start, without the window: for a write
        whose caller could not read the session, or lost its head to a deletion. A
        GetItem when the head is there (the usual case); a one-item Query for the
        highest leftover sequence number when it is not."""
        head = self._get_head(key)
        if head is not None:
            return SessionState(head=head, fresh_seq=head.next_seq)
        try:
            items, _ = query_newest_first(
                self.client, self.table_name, session_pk(key), 2, between=(FIRST_MESSAGE_SK, HEAD_SK)
            )
        except StoreUnavailable:
            # Leftovers exist only where TTL took an earlier life's head first, so that
            # life began at least a TTL ago: numbering from the clock (100 per second)
            # starts above anything it can have written.
            return SessionState(fresh_seq=int(self.clock()) * UNREAD_FLOOR_PER_SECOND)
        return self._state(items, 0)

    def _get_head(self, key: SessionKey) -> Head | None:
        with store_errors():
            reply = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": string_attr(session_pk(key)), "sk": string_attr(HEAD_SK)},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        return parse_head(item) if item else None

    # -- write ---------------------------------------------------------------------

    async def append(
        self,
        key: SessionKey,
        turn: NewTurn,
        expected: SessionState | None,
        *,
        fresh_session: bool = False,
        extras: ExtraWrites | None = None,
        run_guard: RunGuard | None = None,
    ) -> AppendResult:
        """See `SessionStore.append`. `extras` adds items to the turn's transaction (a
        stored response, its links): called with the position after the turn and the
        session's expiry, once per attempt, since a concurrent turn moves both."""
        if run_guard is not None:
            extras = _with_guard(extras, run_guard, self.table_name)
        self.check_turn(turn.messages, fresh_session=fresh_session, system=turn.system)
        if fresh_session:
            # Nobody else knows this id yet: parts that do not fit one transaction can
            # go first, invisible until the head commits them.
            state = SessionState()
        elif expected is None:
            state = await anyio.to_thread.run_sync(self._read_tip, key)
        else:
            state = expected
        # Turns on one session from this process queue here instead of racing each
        # other in DynamoDB; across processes (Lambda), conflicts are retried with a
        # growing, jittered backoff until a deadline.
        lock = self._append_locks.get(key)
        if lock is None:
            lock = self._append_locks[key] = asyncio.Lock()
        async with lock:
            conflicts = 0
            with_optional = True
            deadline = time.monotonic() + APPEND_DEADLINE_SECONDS
            while True:
                try:
                    first_seq = await anyio.to_thread.run_sync(
                        self._write_turn, key, turn, state, fresh_session, extras, with_optional
                    )
                    return AppendResult(first_seq=first_seq, conflicts=conflicts)
                except _OptionalRefused:
                    with_optional = False  # nothing was written: go again without it
                except _Conflict as conflict:
                    conflicts += 1
                    fresh_session = False  # someone else wrote this id: no unconditional parts
                    if time.monotonic() >= deadline:
                        raise StoreUnavailable(f"gave up appending after {conflicts} concurrent conflicts") from None
                    if conflict.current is not None:
                        head = parse_head(conflict.current)
                        state = SessionState(head=head, fresh_seq=head.next_seq)
                    else:
                        state = await anyio.to_thread.run_sync(self._read_tip, key)
                    await anyio.sleep(random.uniform(0, min(0.1, 0.002 * 2 ** min(conflicts, 6))))  # noqa: S311

    def _write_turn(
        self,
        key: SessionKey,
        turn: NewTurn,
        state: SessionState,
        fresh_session: bool,
        extras: ExtraWrites | None,
        with_optional: bool,
    ) -> int:
        now = self.clock()
        pk = session_pk(key)
        head = state.head
        listed_at: float | None
        if head is not None and head.live(now):
            start, base, created, expires = head.next_seq, head.base_seq, head.created_at, head.expires_at
            system, title, listed_at = head.system, head.title, head.listed_at
            metadata, meta_rev = head.metadata, head.meta_rev
            totals = head.usage  # as of head.next_seq, which the Put's condition checks
        else:
            start = max(state.fresh_seq, head.next_seq if head is not None else 0)
            base, created = start, now
            expires = int(now) + self.ttl_seconds if self.ttl_seconds else None
            system, title, listed_at = turn.system, turn.title, None
            metadata, meta_rev = turn.metadata or {}, 0
            totals = UsageTotals()
        entry = self._listing_entry(key, now, created, expires, listed_at)
        if entry is not None:
            listed_at = now

        commit = uuid.uuid4().hex  # marks this attempt's items: see _landed
        message_puts = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": message_item(
                        pk,
                        start + i,
                        message,
                        now,
                        expires,
                        commit,
                        _ids_of(turn, i, start + i),
                        usage=turn.usage if i == len(turn.messages) - 1 else None,
                    ),
                }
            }
            for i, message in enumerate(turn.messages)
        ]
        head_put: dict[str, Any] = {
            "Put": {
                "TableName": self.table_name,
                "Item": self._head_item(
                    key,
                    pk,
                    next_seq=start + len(turn.messages),
                    base_seq=base,
                    created_at=created,
                    updated_at=now,
                    expires_at=expires,
                    system=system,
                    title=title,
                    listed_at=listed_at,
                    metadata=metadata,
                    meta_rev=meta_rev,
                    usage=totals.plus(turn.usage),
                ),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        if head is None:
            head_put["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            # The metadata's revision too: a metadata update since the read is a conflict,
            # and the retry writes the updated metadata, never the one read before it.
            values = {":expected": number_attr(head.next_seq)}
            if head.meta_rev:
                head_put["Put"]["ConditionExpression"] = "next_seq = :expected AND meta_rev = :rev"
                values[":rev"] = number_attr(head.meta_rev)
            else:
                head_put["Put"]["ConditionExpression"] = "next_seq = :expected AND attribute_not_exists(meta_rev)"
            head_put["Put"]["ExpressionAttributeValues"] = values
        extra_writes = [
            extra
            for extra in (extras(start + len(turn.messages), expires) if extras is not None else [])
            if with_optional or not extra.optional
        ]
        if entry is not None:
            extra_writes.insert(0, ExtraWrite({"Put": {"TableName": self.table_name, "Item": entry}}))
        reserve = [head_put, *(extra.transact_item for extra in extra_writes)]
        batches = list(
            _transaction_batches(
                message_puts, reserve_items=len(reserve), reserve_bytes=sum(_item_bytes(item) for item in reserve)
            )
        )
        if len(batches) > 1 and not fresh_session:
            raise TurnTooLarge("This turn is too large to append to a session in one step.")
        written: list[dict[str, Any]] = []
        for batch in batches[:-1]:
            # Parts of a fresh session's long first turn, invisible until the head commits
            # them; never over an item that exists (the id may have been taken meanwhile).
            for put in batch:
                put["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
            try:
                self._transact(batch)
            except (_Conflict, StoreUnavailable):
                self._discard(written, commit)
                raise StoreUnavailable("could not write the first part of a long turn") from None
            written += [put["Put"]["Item"] for put in batch]
        final = [head_put, *batches[-1], *(extra.transact_item for extra in extra_writes)]
        offset = len(final) - len(extra_writes)
        optional_at = {offset + i for i, extra in enumerate(extra_writes) if extra.optional}
        guard_at = {offset + i for i, extra in enumerate(extra_writes) if extra.guard}
        try:
            self._transact(final, optional_at=optional_at, guard_at=guard_at)
        except StoreUnavailable:
            # The commit may have been applied with its answer lost after botocore's
            # retries: then it must not be reported (and retried by the client) as unstored.
            if self._landed(pk, start + len(turn.messages) - 1, commit):
                return start
            self._discard(written, commit)
            raise
        except (_Conflict, _OptionalRefused, RunRevoked):
            self._discard(written, commit)
            raise
        return start

    def _discard(self, items: list[dict[str, Any]], commit: str) -> None:
        """Best effort: delete the parts of this attempt that its head never committed (each
        only if it is still this attempt's), so a failed long turn leaves nothing behind.
        What a failure here leaves stays invisible (beyond `next_seq`) until TTL."""
        for item in items:
            with suppress(StoreUnavailable), unless_refused([]):
                self.client.delete_item(
                    TableName=self.table_name,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    ConditionExpression="#commit = :commit",
                    ExpressionAttributeNames={"#commit": "commit"},
                    ExpressionAttributeValues={":commit": string_attr(commit)},
                )

    def _head_item(self, key: SessionKey, pk: str, **fields: Any) -> dict[str, Any]:
        """The head as this turn writes it (a seam: `devtools.partitions` replays the
        earlier key design by adding the owner index keys here)."""
        return head_item(key, pk, **fields)

    def _listing_entry(
        self, key: SessionKey, now: float, created: float, expires: int | None, listed_at: float | None
    ) -> dict[str, Any] | None:
        """The listing item to write with this turn, if the session's entry moves: at the
        session's creation, then at most once per `listing_interval`, stretched by up to
        half of it per session (a fixed fraction from its id), so that sessions created
        together do not all move in the same second ever after."""
        stretch = 1 + shard_of(key.session_id, 1000) / 2000
        if listed_at is not None and now - listed_at < self.listing_interval * stretch:
            return None
        return listing_item(key, shards=self.listing_shards, active_at=now, created_at=created, expires_at=expires)

    def _landed(self, pk: str, last_seq: int, commit: str) -> bool:
        """Whether this attempt's last message is stored: the transaction is atomic, so
        then all of it is, head included."""
        try:
            with store_errors():
                reply = self.client.get_item(
                    TableName=self.table_name,
                    Key={"pk": string_attr(pk), "sk": string_attr(message_sk(last_seq))},
                    ConsistentRead=True,
                    ProjectionExpression="#commit",
                    ExpressionAttributeNames={"#commit": "commit"},
                )
        except StoreUnavailable:
            return False
        return bool(reply.get("Item", {}).get("commit", {}).get("S") == commit)

    def _transact(
        self,
        items: list[dict[str, Any]],
        *,
        optional_at: set[int] | frozenset[int] = frozenset(),
        guard_at: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        """One TransactWriteItems. The head, when there is one, comes first: its
        condition failing is a `_Conflict`; an optional item's is `_OptionalRefused`; a
        guard's is `RunRevoked`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = error.response.get("CancellationReasons") or []
                head_reason = reasons[0] if reasons else {}
                if head_reason.get("Code") in {"ConditionalCheckFailed", "TransactionConflict"}:
                    raise _Conflict(head_reason.get("Item")) from None
                if any(r.get("Code") == "TransactionConflict" for r in reasons):
                    raise _Conflict(None) from None
                refused = {i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"}
                if refused & guard_at:
                    raise RunRevoked() from None
                if refused and refused <= optional_at:
                    raise _OptionalRefused() from None
            raise StoreUnavailable("could not write the turn") from error
        except BotoCoreError as error:
            raise StoreUnavailable("could not write the turn") from error

    # -- compaction (core.compaction; items: core.store.summaries) --------------------

    async def claim_compaction(self, key: SessionKey, state: SessionState, claim_id: str, lease: float) -> bool:
        """Take the right to write this session's next summary (at most one compaction
        at a time, and none on a summary that changed since `state` was read)."""
        expires = state.head.expires_at if state.head is not None else None
        return await anyio.to_thread.run_sync(
            lambda: summaries.claim(
                self.client,
                self.table_name,
                session_pk(key),
                version=state.summary_version,
                claim_id=claim_id,
                now=self.clock(),
                lease=lease,
                expires=expires,
            )
        )

    async def release_compaction(self, key: SessionKey, claim_id: str) -> None:
        await anyio.to_thread.run_sync(summaries.release, self.client, self.table_name, session_pk(key), claim_id)

    async def save_summary(self, key: SessionKey, state: SessionState, summary: Summary, claim_id: str) -> bool:
        """Store the summary (latest and listed) if this compaction still holds its claim."""
        expires = state.head.expires_at if state.head is not None else None
        return await anyio.to_thread.run_sync(
            lambda: summaries.save(
                self.client,
                self.table_name,
                session_pk(key),
                summary,
                claim_id=claim_id,
                version=state.summary_version,
                expires=expires,
            )
        )

    async def read_messages(self, key: SessionKey, first: int, last: int) -> list[StoredMessage]:
        """The committed messages `first`..`last` (what a compaction summarises)."""
        page = await anyio.to_thread.run_sync(
            lambda: self._list_messages(key, last - first + 1, str(first - 1) if first > 0 else None)
        )
        return [message for message in (page.items if page else []) if message.seq <= last]

    async def list_summaries(self, key: SessionKey, first: int, last: int) -> list[Summary]:
        return await anyio.to_thread.run_sync(
            summaries.list_range, self.client, self.table_name, session_pk(key), first, last
        )

    # -- listing and deletion -------------------------------------------------------

    async def list_sessions(self, owner: str, *, limit: int, after: str | None) -> Page[SessionSummary]:
        return await anyio.to_thread.run_sync(self._list_sessions, owner, limit, after)

    def _list_sessions(self, owner: str, limit: int, after: str | None) -> Page[SessionSummary]:
        """The owner index's shards, merged newest first; never a Scan (`core.store.listing`)."""
        with store_errors():
            return OwnerListing(self.client, self.table_name, shards=self.listing_shards).page(
                owner, limit=limit, after=after, now=self.clock()
            )

    async def list_messages(
        self, key: SessionKey, *, limit: int, after: str | None, descending: bool = False
    ) -> Page[StoredMessage] | None:
        return await anyio.to_thread.run_sync(self._list_messages, key, limit, after, descending)

    def _list_messages(
        self, key: SessionKey, limit: int, after: str | None, descending: bool = False
    ) -> Page[StoredMessage] | None:
        """The head (for the session's committed range), then one Query of that range."""
        if after is not None and not re.fullmatch(r"[0-9]{1,12}", after):  # ASCII; str.isdigit() takes "²"
            raise InvalidCursor(after)
        head = self._get_head(key)
        if head is None or not head.live(self.clock()):
            return None
        first, last = head.base_seq, head.next_seq - 1
        if after is not None and descending:
            last = min(last, int(after) - 1)
        elif after is not None:
            first = max(first, int(after) + 1)
        if first > last:
            return Page(items=[], next_cursor=None)
        pk = session_pk(key)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": string_attr(pk),
                ":first": string_attr(message_sk(first)),
                ":last": string_attr(message_sk(last)),
            },
            "ConsistentRead": True,
            "ScanIndexForward": not descending,
            "Limit": limit,
        }
        messages: list[StoredMessage] = []
        with store_errors():
            while len(messages) < limit:
                page = self.client.query(**request)
                messages.extend(stored_message(item, pk) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                request["Limit"] = limit - len(messages)
        end = first if descending else last
        more = bool(messages) and messages[-1].seq != end
        return Page(items=messages, next_cursor=str(messages[-1].seq) if more else None)

    async def head(self, key: SessionKey) -> Head | None:
        head = await anyio.to_thread.run_sync(self._get_head, key)
        return head if head is not None and head.live(self.clock()) else None

    async def get_messages(self, key: SessionKey, seqs: list[int]) -> dict[int, StoredMessage] | None:
        return await anyio.to_thread.run_sync(self._get_messages, key, seqs)

    def _get_messages(self, key: SessionKey, seqs: list[int]) -> dict[int, StoredMessage] | None:
        """One BatchGetItem: the head (for the committed range) and the messages."""
        pk = session_pk(key)
        keys = [{"pk": string_attr(pk), "sk": string_attr(HEAD_SK)}]
        keys += [{"pk": string_attr(pk), "sk": string_attr(message_sk(seq))} for seq in dict.fromkeys(seqs)]
        found: list[dict[str, Any]] = []
        with store_errors():
            for start in range(0, len(keys), 100):  # BatchGetItem takes 100 keys at a time
                pending: dict[str, Any] = {self.table_name: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
                for attempt in range(10):
                    reply = self.client.batch_get_item(RequestItems=pending)
                    found += reply.get("Responses", {}).get(self.table_name, [])
                    pending = reply.get("UnprocessedKeys") or {}
                    if not pending:
                        break
                    time.sleep(min(1.0, 0.05 * 2**attempt))
                else:
                    raise StoreUnavailable("DynamoDB kept some keys unprocessed")
        heads = [item for item in found if item["sk"]["S"] == HEAD_SK]
        if not heads:
            return None
        head = parse_head(heads[0])
        if not head.live(self.clock()):
            return None
        messages = (stored_message(item, pk) for item in found if item["sk"]["S"] != HEAD_SK)
        return {m.seq: m for m in messages if head.base_seq <= m.seq < head.next_seq}

    async def find_message(self, key: SessionKey, item_id: str) -> StoredMessage | None:
        return await anyio.to_thread.run_sync(self._find_message, key, item_id)

    def _find_message(self, key: SessionKey, item_id: str) -> StoredMessage | None:
        """The committed message showing the item `item_id`, by reading the session's
        messages (a filtered Query): only for ids whose place is not in them, a response's
        output item whose response was deleted."""
        head = self._get_head(key)
        if head is None or not head.live(self.clock()) or head.next_seq <= head.base_seq:
            return None
        pk = session_pk(key)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "FilterExpression": "contains(ids, :id)",
            "ExpressionAttributeValues": {
                ":pk": string_attr(pk),
                ":first": string_attr(message_sk(head.base_seq)),
                ":last": string_attr(message_sk(head.next_seq - 1)),
                ":id": string_attr(item_id),
            },
            "ConsistentRead": True,
        }
        with store_errors():
            while True:
                page = self.client.query(**request)
                for item in page.get("Items", []):
                    stored = stored_message(item, pk)
                    if item_id in stored.item_ids:
                        return stored
                if "LastEvaluatedKey" not in page:
                    return None
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def delete_message(self, key: SessionKey, seq: int) -> bool:
        return await anyio.to_thread.run_sync(self._delete_message, key, seq)

    def _delete_message(self, key: SessionKey, seq: int) -> bool:

        try:
            with store_errors():
                self.client.delete_item(
                    TableName=self.table_name,
                    Key={"pk": string_attr(session_pk(key)), "sk": string_attr(message_sk(seq))},
                    ConditionExpression="attribute_exists(pk)",
                )
        except StoreUnavailable as error:
            if refused_by_condition(error):
                return False
            raise
        return True

    async def update_metadata(self, key: SessionKey, metadata: dict[str, str]) -> Head | None:
        return await anyio.to_thread.run_sync(self._update_metadata, key, metadata)

    def _update_metadata(self, key: SessionKey, metadata: dict[str, str]) -> Head | None:
        """SET metadata on a live head (it never moves the turn's commit marker)."""

        try:
            with store_errors():
                reply = self.client.update_item(
                    TableName=self.table_name,
                    Key={"pk": string_attr(session_pk(key)), "sk": string_attr(HEAD_SK)},
                    UpdateExpression="SET metadata = :metadata ADD meta_rev :one",
                    ConditionExpression=(
                        "attribute_exists(pk) AND (attribute_not_exists(expires_at) OR expires_at > :now)"
                    ),
                    ExpressionAttributeValues={
                        ":metadata": string_attr(json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))),
                        ":one": number_attr(1),
                        ":now": number_attr(int(self.clock())),
                    },
                    ReturnValues="ALL_NEW",
                )
        except StoreUnavailable as error:
            if refused_by_condition(error):
                return None
            raise
        return parse_head(reply["Attributes"])

    async def delete_session(self, key: SessionKey) -> bool:
        return await anyio.to_thread.run_sync(self._delete_session, key)

    def _delete_session(self, key: SessionKey) -> bool:
        """Delete what the session's links name, then its items, then the head on the
        condition that no turn was appended meanwhile (else go round again), so nothing
        of the session is left behind, inside its partition or outside it."""
        head = self._get_head(key)
        if head is None or not head.live(self.clock()):
            return False
        pk = session_pk(key)
        for _attempt in range(MAX_APPEND_ATTEMPTS):
            delete_partition(self.client, self.table_name, key, pk)
            try:
                with store_errors():
                    self.client.delete_item(
                        TableName=self.table_name,
                        Key={"pk": string_attr(pk), "sk": string_attr(HEAD_SK)},
                        ConditionExpression="attribute_not_exists(pk) OR next_seq = :seen",
                        ExpressionAttributeValues={":seen": number_attr(head.next_seq)},
                    )
                return True
            except StoreUnavailable as error:
                if not refused_by_condition(error):
                    raise
                head = self._get_head(key) or head
        raise StoreUnavailable("the session kept changing while it was being deleted")


def _with_guard(extras: ExtraWrites | None, run_guard: RunGuard, table_name: str) -> ExtraWrites:
    """`extras` and a check that the recorded run is still its worker's (a cancel that
    came first wins: the turn is not stored)."""
    condition, names, values = guard(run_guard.worker)
    check = {
        "ConditionCheck": {
            "TableName": table_name,
            "Key": {"pk": string_attr(run_guard.pk), "sk": string_attr(run_guard.state_sk)},
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }

    def guarded(position: int, expires_at: int | None) -> list[ExtraWrite]:
        return [*(extras(position, expires_at) if extras is not None else []), ExtraWrite(check, guard=True)]

    return guarded


def _item_bytes(transact_item: dict[str, Any]) -> int:
    """What an entry of a transaction counts towards its 4 MB: a Put's item, or the key
    (and condition) of a Delete."""
    action = transact_item.get("Put", {}).get("Item") or next(iter(transact_item.values()))
    return len(json.dumps(action, default=len).encode())  # a binary value counts about its length


def _transaction_batches(
    puts: list[dict[str, Any]], *, reserve_items: int, reserve_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """Split puts into transactions within DynamoDB's limits; the last one leaves room
    for the reserved head, and is the only one when everything fits."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    current_bytes = 0
    for put in reversed(puts):  # fill the final (commit) batch first, then earlier ones
        size = _item_bytes(put)
        limit_items = MAX_TRANSACTION_ITEMS - (reserve_items if not batches else 0)
        limit_bytes = MAX_TRANSACTION_BYTES - (reserve_bytes if not batches else 0)
        if current and (len(current) + 1 > limit_items or current_bytes + size > limit_bytes):
            batches.append(current[::-1])
            current, current_bytes = [], 0
        current.append(put)
        current_bytes += size
    batches.append(current[::-1])
    yield from reversed(batches)
