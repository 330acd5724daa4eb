"""Deleting a session's partition, and what its links name outside it (docs/storage.md,
rule 5). The head is deleted last, by the store, on the condition that no turn was
committed meanwhile."""

from __future__ import annotations

import time
from typing import Any

from core.store.base import SessionKey, StoreUnavailable
from core.store.errors import store_errors, unless_refused
from core.store.keys import HEAD_SK, LINK_PREFIX, RESPONSE_PREFIX, response_log, string_attr


def delete_partition(client: Any, table_name: str, key: SessionKey, pk: str) -> None:
    """Every item of the partition but the head (those before it, then the recorded
    answers after it, `STREAM...`); each link's target first."""
    for condition in ("sk < :head", "sk > :head"):
        _delete_range(client, table_name, key, pk, condition)


def _delete_range(client: Any, table_name: str, key: SessionKey, pk: str, condition: str) -> None:
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": f"pk = :pk AND {condition}",
        "ExpressionAttributeValues": {":pk": string_attr(pk), ":head": string_attr(HEAD_SK)},
        "ProjectionExpression": "pk, sk, ref_pk, ref_sk",
        "ConsistentRead": True,
    }
    with store_errors():
        while True:
            page = client.query(**request)
            items = page.get("Items", [])
            for item in items:
                if item["sk"]["S"].startswith(LINK_PREFIX) and "ref_pk" in item:
                    _delete_link_target(client, table_name, key, item["ref_pk"]["S"], item["ref_sk"]["S"])
            item_keys = [{"pk": item["pk"], "sk": item["sk"]} for item in items]
            for start in range(0, len(item_keys), 25):
                batch_delete(client, table_name, item_keys[start : start + 25])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _delete_link_target(client: Any, table_name: str, key: SessionKey, target_pk: str, target_sk: str) -> None:
    """Delete what a link names, if it still belongs to this session: a conversation
    name may have moved on to a later session (a fork) and is left there. A stored
    response's recorded events (`EVENT#...`, in its partition) go with it."""
    refused: list[bool] = []
    with unless_refused(refused):
        client.delete_item(
            TableName=table_name,
            Key={"pk": string_attr(target_pk), "sk": string_attr(target_sk)},
            ConditionExpression="attribute_not_exists(session_id) OR session_id = :session",
            ExpressionAttributeValues={":session": string_attr(key.session_id)},
        )
    if not refused and target_pk.startswith(RESPONSE_PREFIX):
        from core.store.events import DynamoDBEventLog

        DynamoDBEventLog(client, table_name).delete_log(response_log(target_pk))


def batch_delete(client: Any, table_name: str, keys: list[dict[str, Any]]) -> None:
    pending: dict[str, Any] = {table_name: [{"DeleteRequest": {"Key": key}} for key in keys]}
    for attempt in range(10):
        reply = client.batch_write_item(RequestItems=pending)
        pending = reply.get("UnprocessedItems") or {}
        if not pending:
            return
        time.sleep(min(1.0, 0.05 * 2**attempt))
    raise StoreUnavailable("DynamoDB kept some deletions unprocessed")
