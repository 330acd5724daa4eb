"""The owner index: a principal's sessions, most recently active first, without a hot
partition (docs/storage.md, "Owner index").

Each session has one listing item in its own partition (`sk = LISTING`) carrying the
index keys

    gsi1pk = OWNER#<owner>#<shard>       shard = a hash of the session id, 0..shards-1
    gsi1sk = <active ms, 15 digits>#<session id>

It is written in the turn's transaction only when the session's place in the listing
has to move: at its creation, then at most once per `interval` seconds of activity. So
a principal's turns spread over `shards` index partitions, and most turns write no
index entry at all (the head, rewritten every turn, carries no index keys).

A listing Queries every shard newest first (in parallel), plus the partition the
earlier design wrote (`OWNER#<owner>`, where heads of sessions untouched since an
upgrade still are), merges them by sort key and reads the page's heads with one
BatchGetItem for their exact counts and times (a page is ordered by those exact
times; across pages the order has the interval's resolution). The cursor is the last
sort key returned, valid across every shard. Cost of a page of `limit`: shards + 1 Queries of
at most `limit` index items each, and one BatchGetItem of `limit` heads.
"""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.store.base import InvalidCursor, Page, SessionKey, SessionSummary, StoreUnavailable
from core.store.codec import parse_totals
from core.store.keys import HEAD_SK, LISTING_SK, OWNER_INDEX, number_attr, session_pk, string_attr

INDEX_CURSOR = re.compile(r"[0-9]{15}#[A-Za-z0-9._:-]{1,128}")
MAX_QUERY_THREADS = 8


def shard_of(session_id: str, shards: int) -> int:
    """A stable shard in 0..shards-1 (a hash, not Python's salted `hash`)."""
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:4], "big") % shards


def index_partition(owner: str, shard: int | None) -> str:
    """The index partition of a shard; None is the single partition of the earlier design."""
    return f"OWNER#{owner}" if shard is None else f"OWNER#{owner}#{shard:02d}"


def index_sort_key(active_at: float, session_id: str) -> str:
    return f"{int(active_at * 1000):015d}#{session_id}"


def listing_item(
    key: SessionKey, *, shards: int, active_at: float, created_at: float, expires_at: int | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": string_attr(session_pk(key.owner, key.session_id)),
        "sk": string_attr(LISTING_SK),
        "owner": string_attr(key.owner),
        "session_id": string_attr(key.session_id),
        "created_at": number_attr(round(created_at, 3)),
        "gsi1pk": string_attr(index_partition(key.owner, shard_of(key.session_id, shards))),
        "gsi1sk": string_attr(index_sort_key(active_at, key.session_id)),
    }
    if expires_at is not None:
        item["expires_at"] = number_attr(expires_at)
    return item


def _expired(item: dict[str, Any], now: float) -> bool:
    return "expires_at" in item and int(item["expires_at"]["N"]) <= now


class OwnerListing:
    """Reads of the owner index for one table."""

    def __init__(self, client: Any, table_name: str, *, shards: int) -> None:
        self.client = client
        self.table_name = table_name
        self.shards = shards

    def page(self, owner: str, *, limit: int, after: str | None, now: float) -> Page[SessionSummary]:
        if after is not None and not INDEX_CURSOR.fullmatch(after):
            raise InvalidCursor(after)
        partitions = [index_partition(owner, shard) for shard in range(self.shards)]
        partitions.append(index_partition(owner, None))
        with ThreadPoolExecutor(max_workers=min(MAX_QUERY_THREADS, len(partitions))) as pool:
            results = list(pool.map(lambda partition: self._newest(partition, limit, after, now), partitions))
        entries = sorted((entry for found, _ in results for entry in found), key=lambda e: e[0], reverse=True)
        more = len(entries) > limit or any(cut for _, cut in results)
        entries = entries[:limit]
        heads = self._heads(owner, [session_id for _, session_id in entries])
        summaries: list[SessionSummary] = []
        for _, session_id in entries:
            head = heads.get(session_id)
            if head is None or _expired(head, now):
                continue  # deleted or expired since the index was read
            summaries.append(
                SessionSummary(
                    session_id=session_id,
                    title=head.get("title", {"S": ""})["S"],
                    message_count=int(head["next_seq"]["N"]) - int(head.get("base_seq", {"N": "0"})["N"]),
                    created_at=float(head["created_at"]["N"]),
                    updated_at=float(head["updated_at"]["N"]),
                    usage=parse_totals(head),
                )
            )
        # Within a page, exact order: the heads' activity times (the index's order has the
        # resolution of the listing interval). The cursor stays the index position.
        summaries.sort(key=lambda summary: summary.updated_at, reverse=True)
        cursor = entries[-1][0] if more and entries else None
        return Page(items=summaries, next_cursor=cursor)

    def _newest(self, partition: str, limit: int, after: str | None, now: float) -> tuple[list[tuple[str, str]], bool]:
        """Up to `limit` live (sort key, session id) of one index partition, newest first,
        before `after`; and whether the partition holds more."""
        condition = "gsi1pk = :partition"
        values: dict[str, Any] = {":partition": string_attr(partition)}
        if after is not None:
            condition += " AND gsi1sk < :after"
            values[":after"] = string_attr(after)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "gsi1sk, session_id, expires_at",
            "ScanIndexForward": False,
            "Limit": limit,
        }
        found: list[tuple[str, str]] = []
        while True:
            reply = self.client.query(**request)
            for item in reply.get("Items", []):
                if not _expired(item, now):
                    found.append((item["gsi1sk"]["S"], item["session_id"]["S"]))
            if "LastEvaluatedKey" not in reply:
                return found, False
            if len(found) >= limit:
                return found, True
            request["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _heads(self, owner: str, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The heads of these sessions, by session id: one BatchGetItem (and its retries)."""
        if not session_ids:
            return {}
        keys = [
            {"pk": string_attr(session_pk(owner, session_id)), "sk": string_attr(HEAD_SK)}
            for session_id in dict.fromkeys(session_ids)
        ]
        heads: dict[str, dict[str, Any]] = {}
        pending: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(10):
            reply = self.client.batch_get_item(RequestItems=pending)
            for item in reply.get("Responses", {}).get(self.table_name, []):
                heads[item["session_id"]["S"]] = item
            pending = reply.get("UnprocessedKeys") or {}
            if not pending:
                return heads
            time.sleep(min(1.0, 0.05 * 2**attempt))
        raise StoreUnavailable("DynamoDB kept some session heads unprocessed")
