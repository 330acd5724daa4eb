"""Stored responses and conversation names, in the sessions table, and the reads of a
session partition "up to a position" that a chain of responses needs.

A chain of responses is a session (see `core.store.dynamodb` for its partition). A
stored response does not copy the transcript: it names its session and its
*position*, the session's `next_seq` right after its turn was appended, so the
history it stands for is the session's messages with `seq < position`. Storage is
therefore linear in the length of a chain: each response adds its own turn's
messages and one item of its own.

Items (same table, `pk`/`sk` strings):

    pk = RESPONSE#<owner>#<response id>     sk = RESPONSE
        session_id, position, created_at, expires_at (the session's), and `body`:
        the Response object's JSON (output items, usage and the request parameters
        it echoes). Never the input or the history.
    pk = CONVERSATION#<owner>#<name>        sk = CONVERSATION
        the earlier design's conversation name: latest_response_id and its
        session_id / position. Only read now (a conversation is a session), to carry
        a named chain into the session of that name once; the turn that does deletes it.

Every key includes the owner: another principal's id is simply not there.

Reads of a chain's history (`load_history`): one strongly consistent, descending
Query on the session partition with `sk BETWEEN MSG#<position - window> AND
SESSION`, Limit = window + 1. `SESSION` sorts after every `MSG#` key, so the head
comes first, then the newest messages. When the response is the session's tip
(`position == next_seq`, the common case of continuing the latest response) that
one Query is the whole read. When it is an earlier response (a fork), the first
Query also returned messages at or after `position` (the later turns); a second
Query, `sk BETWEEN MSG#<lo> AND MSG#<below what was seen>`, fetches the rest of the
window. Either way the cost is bounded by the window, never by the session's length.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import anyio

from core.store import events, keys, summaries
from core.store.base import (
    AppendResult,
    ChainHistory,
    ConversationPointer,
    NewTurn,
    RecordedCommit,
    SessionKey,
    SessionState,
    StoredResponse,
    TurnTooLarge,
)
from core.store.codec import is_expired, parse_head
from core.store.dynamodb import MAX_ITEM_BYTES, DynamoDBSessionStore, ExtraWrite, session_pk
from core.store.errors import store_errors, unless_refused
from core.store.keys import (
    CONVERSATION_SK,
    HEAD_SK,
    RESPONSE_SK,
    SUMMARY_SK,
    link_item,
    message_sk,
    number_attr,
    string_attr,
)
from core.store.reads import query_newest_first

_RESPONSE_OVERHEAD_BYTES = 600
"""Bytes of a response item besides its body: keys, names and numbers (generously)."""


response_pk = keys.response_pk
conversation_pk = keys.conversation_pk


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class DynamoDBResponseStore:
    """The response and conversation access patterns, on the session store's table and client."""

    def __init__(self, sessions: DynamoDBSessionStore) -> None:
        self.sessions = sessions

    @property
    def table_name(self) -> str:
        return self.sessions.table_name

    @property
    def client(self) -> Any:
        return self.sessions.client

    def now(self) -> float:
        clock = getattr(self.sessions, "clock", time.time)
        return float(clock())

    def new_session_expiry(self) -> int | None:
        """`expires_at` for a session created from now on. Computed before the session's
        turn is written, so it is never later than the session's own expiry."""
        ttl_seconds = int(getattr(self.sessions, "ttl_seconds", 0))
        return int(self.now()) + ttl_seconds if ttl_seconds else None

    # -- limits --------------------------------------------------------------------

    @staticmethod
    def check_response(body: dict[str, Any]) -> None:
        """Raise `TurnTooLarge` if this Response object could not be kept in one item."""
        size = len(_json(body).encode()) + _RESPONSE_OVERHEAD_BYTES
        if size > MAX_ITEM_BYTES:
            raise TurnTooLarge(
                f"The response is too large to store ({size:,} bytes; the limit is {MAX_ITEM_BYTES:,} bytes)."
            )

    # -- responses -----------------------------------------------------------------

    async def get_response(self, owner: str, response_id: str) -> StoredResponse | None:
        return await anyio.to_thread.run_sync(self._get_response, owner, response_id)

    def _get_response(self, owner: str, response_id: str) -> StoredResponse | None:
        with store_errors():
            reply = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": string_attr(response_pk(owner, response_id)), "sk": string_attr(RESPONSE_SK)},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        if item is None or is_expired(item, self.now()):
            return None
        body = json.loads(item["body"]["S"])
        if "status" in item:
            body["status"] = item["status"]["S"]  # a run's state moves ahead of its body
        return StoredResponse(
            response_id=response_id,
            session_id=item["session_id"]["S"],
            position=int(item["position"]["N"]),
            created_at=float(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
            body=body,
            input_count=int(item["input_count"]["N"]) if "input_count" in item else None,
            status=str(body.get("status")),
            recorded="last_seq" in item,
            background=bool(item.get("background", {}).get("BOOL", False)),
        )

    @staticmethod
    def _response_item(owner: str, response: StoredResponse) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": string_attr(response_pk(owner, response.response_id)),
            "sk": string_attr(RESPONSE_SK),
            "owner": string_attr(owner),
            "response_id": string_attr(response.response_id),
            "session_id": string_attr(response.session_id),
            "position": number_attr(response.position),
            "created_at": number_attr(round(response.created_at, 3)),
            "body": string_attr(_json(response.body)),
        }
        if response.expires_at is not None:
            item["expires_at"] = number_attr(response.expires_at)
        if response.input_count is not None:
            item["input_count"] = number_attr(response.input_count)
        if response.recorded:
            item["status"] = string_attr(response.status)
            item["background"] = {"BOOL": response.background}
        return item

    async def open_response(
        self,
        owner: str,
        response: StoredResponse,
        *,
        worker: str | None,
        lease_until: float | None,
        request: dict[str, Any] | None = None,
        link: bool = False,
    ) -> None:
        """The item of a response that starts running (or is queued: `worker` None and
        `request`, what a background worker needs to run it). With `link` (its session
        exists already), its link in the session's partition too, in one transaction:
        deleting the session while it runs deletes it (and its events), and its worker,
        refused its next write, stops. Its events follow in its partition; its turn's
        transaction replaces it (and writes the link) when it is done."""
        item = self._response_item(owner, response)
        item["last_seq"] = number_attr(-1)
        if worker is not None:
            item["worker"] = string_attr(worker)
        if lease_until is not None:
            item["lease_until"] = number_attr(round(lease_until, 3))
        if request is not None:
            item["request"] = string_attr(_json(request))
        puts: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table_name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
        ]
        if link:
            session = session_pk(SessionKey(owner=owner, session_id=response.session_id))
            puts.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": link_item(session, item["pk"]["S"], RESPONSE_SK, response.expires_at),
                    }
                }
            )
        await anyio.to_thread.run_sync(self._put_new, puts)

    def _put_new(self, puts: list[dict[str, Any]]) -> None:
        with store_errors():
            self.client.transact_write_items(TransactItems=puts)

    async def get_request(self, owner: str, response_id: str) -> dict[str, Any] | None:
        """What a queued background response was asked (`open_response`'s `request`)."""
        return await anyio.to_thread.run_sync(self._get_request, owner, response_id)

    def _get_request(self, owner: str, response_id: str) -> dict[str, Any] | None:
        with store_errors():
            reply = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": string_attr(response_pk(owner, response_id)), "sk": string_attr(RESPONSE_SK)},
                ConsistentRead=True,
                ProjectionExpression="#request",
                ExpressionAttributeNames={"#request": "request"},
            )
        raw = reply.get("Item", {}).get("request", {}).get("S")
        return json.loads(raw) if raw else None

    async def append_response(
        self,
        key: SessionKey,
        turn: NewTurn,
        expected: SessionState | None,
        *,
        fresh_session: bool,
        response: StoredResponse,
        retire: ConversationPointer | None = None,
        recorded: RecordedCommit | None = None,
    ) -> tuple[AppendResult, StoredResponse]:
        """The turn and the response item in ONE transaction, with a link to the response
        in the session partition (so deleting the session deletes it). A failure stores
        neither. Returns the append's result and the response as stored (its position).
        A recorded response's last events go in the same transaction, guarded: when its
        run was cancelled first, nothing is stored and `RunRevoked` is raised."""
        stored: list[StoredResponse] = []

        def extras(position: int, expires_at: int | None) -> list[ExtraWrite]:
            placed = replace(response, session_id=key.session_id, position=position, expires_at=expires_at)
            stored[:] = [placed]
            item = self._response_item(key.owner, placed)
            link = link_item(session_pk(key), item["pk"]["S"], RESPONSE_SK, expires_at)
            put: dict[str, Any] = {"TableName": self.table_name, "Item": item}
            writes = [ExtraWrite({"Put": put}), ExtraWrite({"Put": {"TableName": self.table_name, "Item": link}})]
            if recorded is not None:
                condition, names, values = events.guard(recorded.worker)
                put.update(
                    ConditionExpression=condition, ExpressionAttributeNames=names, ExpressionAttributeValues=values
                )
                writes[0] = ExtraWrite({"Put": put}, guard=True)
                log = keys.response_log(item["pk"]["S"])
                if recorded.events:
                    item["last_seq"] = number_attr(recorded.events[-1][0])
                    puts = events.batch_puts(self.table_name, log, recorded.events, expires_at)
                    writes.extend(ExtraWrite(put) for put in puts)
            if retire is not None:
                pointer_key = {
                    "pk": string_attr(conversation_pk(key.owner, retire.name)),
                    "sk": string_attr(CONVERSATION_SK),
                }
                condition = "latest_response_id = :seen"
                values = {":seen": string_attr(retire.latest_response_id)}
                delete = {"TableName": self.table_name, "Key": pointer_key, "ConditionExpression": condition}
                writes.append(ExtraWrite({"Delete": {**delete, "ExpressionAttributeValues": values}}, optional=True))
            return writes

        result = await self.sessions.append(key, turn, expected, fresh_session=fresh_session, extras=extras)
        return result, stored[0]

    async def delete_response(self, owner: str, response_id: str) -> bool:
        return await anyio.to_thread.run_sync(self._delete_response, owner, response_id)

    def _delete_response(self, owner: str, response_id: str) -> bool:
        """One conditional DeleteItem, then its recorded events (a run still going is
        refused its next write, and stops); False when there was no live item to delete."""
        refused: list[bool] = []
        old: dict[str, Any] = {}
        with unless_refused(refused):
            old = self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": string_attr(response_pk(owner, response_id)), "sk": string_attr(RESPONSE_SK)},
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(expires_at) OR expires_at > :now)",
                ExpressionAttributeValues={":now": number_attr(int(self.now()))},
                ReturnValues="ALL_OLD",
            )
        if not refused and "last_seq" in old.get("Attributes", {}):
            events.DynamoDBEventLog(self.client, self.table_name).delete_log(
                keys.response_log(response_pk(owner, response_id))
            )
        return not refused

    # -- conversations -------------------------------------------------------------

    async def get_conversation(self, owner: str, name: str) -> ConversationPointer | None:
        return await anyio.to_thread.run_sync(self._get_conversation, owner, name)

    def _get_conversation(self, owner: str, name: str) -> ConversationPointer | None:
        with store_errors():
            reply = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": string_attr(conversation_pk(owner, name)), "sk": string_attr(CONVERSATION_SK)},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        if item is None or is_expired(item, self.now()):
            return None
        return ConversationPointer(
            name=name,
            latest_response_id=item["latest_response_id"]["S"],
            session_id=item["session_id"]["S"],
            position=int(item["position"]["N"]),
            expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
        )

    # -- a session "up to a position" ---------------------------------------------

    async def load_history(self, key: SessionKey, position: int, window: int) -> ChainHistory:
        return await anyio.to_thread.run_sync(self._load_history, key, position, window)

    def _load_history(self, key: SessionKey, position: int, window: int) -> ChainHistory:
        pk = session_pk(key)
        low = max(0, position - window)
        items, exhausted = query_newest_first(
            self.client, self.table_name, pk, window + 2, between=(message_sk(low), HEAD_SK)
        )
        summary_item = next((item for item in items[:2] if item["sk"]["S"] == SUMMARY_SK), None)
        if summary_item is not None:
            items = [item for item in items if item is not summary_item]
        if not items or items[0]["sk"]["S"] != HEAD_SK:
            return ChainHistory(position=position, head=None, usable=False, messages=[], earlier=False)
        head = parse_head(items[0])
        now = self.now()
        if not head.live(now) or position > head.next_seq or position <= head.base_seq:
            # Deleted and re-created, expired, or from an earlier life of the id.
            return ChainHistory(position=position, head=head, usable=False, messages=[], earlier=False)
        floor = max(low, head.base_seq)
        newest_first: list[dict[str, Any]] = []
        lowest_seen = position
        for item in items[1:]:
            seq = int(item["seq"]["N"])
            lowest_seen = min(lowest_seen, seq)
            if seq < floor:
                break
            if seq < position and not is_expired(item, now):
                newest_first.append(json.loads(item["msg"]["S"]))
        top = lowest_seen - 1
        if not exhausted and top >= floor:
            # A fork: the head and the later turns took the first Query's Limit.
            more, _ = query_newest_first(
                self.client, self.table_name, pk, top - floor + 1, between=(message_sk(floor), message_sk(top))
            )
            for item in more:
                if not is_expired(item, now):
                    newest_first.append(json.loads(item["msg"]["S"]))
        messages = newest_first[:window][::-1]
        summary, version = summaries.parse_summary(summary_item, head) if summary_item is not None else (None, 0)
        return ChainHistory(
            position=position,
            head=head,
            usable=True,
            messages=messages,
            earlier=position - head.base_seq > len(messages),
            summary=summary if summary is not None and summary.last_seq < position - len(messages) else None,
            summary_version=version,
        )
