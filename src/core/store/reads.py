"""Reads of a session partition that more than one access pattern needs."""

from __future__ import annotations

from typing import Any

from core.store.errors import store_errors
from core.store.keys import string_attr


def query_newest_first(
    client: Any, table_name: str, pk: str, limit: int, *, between: tuple[str, str] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items of one partition (optionally `between` two sort keys), newest
    first, in one strongly consistent Query that follows `LastEvaluatedKey` when the
    1 MB page cap cuts it short. Also says whether the range was read to its end."""
    condition, values = "pk = :pk", {":pk": string_attr(pk)}
    if between is not None:
        condition += " AND sk BETWEEN :low AND :high"
        values |= {":low": string_attr(between[0]), ":high": string_attr(between[1])}
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
        "ConsistentRead": True,
        "Limit": limit,
    }
    items: list[dict[str, Any]] = []
    with store_errors():
        while True:
            page = client.query(**request)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items, True
            if len(items) >= limit:
                return items, False
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            request["Limit"] = limit - len(items)
