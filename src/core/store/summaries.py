"""Summaries of a session's earlier messages (compaction, issue 12): their items, the
claim that lets concurrent turns compact a session at most once, and the listing.

Two items per summary, both in the session partition (docs/storage.md, "Summaries"):

- `MSG#SUMMARY`, the latest summary, where the turn's one Query reads it (between the
  newest message and the head). It carries a `version` (how many summaries were
  written) and, while a compaction runs, a claim (`claim_id`, `claim_until`).
- `COMPACTION#<last seq>`, every summary ever written, for the message listing.

A compaction claims the latest item (a conditional update on the `version` the turn
read and on no live claim), runs the model, then writes both items in one transaction
conditioned on its own claim. Two turns that both see a session due for compaction
race on the claim; the loser does nothing, so the model runs once and one summary is
written. A claim that is never completed (the process died) lapses after its lease.
"""

from __future__ import annotations

from typing import Any

from core.store.base import Head, StoreUnavailable, Summary
from core.store.errors import refused_by_condition, store_errors
from core.store.keys import SUMMARY_SK, compaction_sk, number_attr, string_attr


def parse_summary(item: dict[str, Any], head: Head) -> tuple[Summary | None, int]:
    """The summary an item holds, if it belongs to this life of the session, and the
    item's version (whatever life wrote it: a claim is made against what is there)."""
    version = int(item.get("version", {"N": "0"})["N"])
    if "text" not in item:
        return None, version
    summary = Summary(
        first_seq=int(item["first_seq"]["N"]),
        last_seq=int(item["last_seq"]["N"]),
        text=item["text"]["S"],
        created_at=float(item.get("created_at", {"N": "0"})["N"]),
        model=item.get("model", {"S": ""})["S"],
    )
    if summary.first_seq < head.base_seq or summary.last_seq >= head.next_seq:
        return None, version  # an earlier life's, or beyond what is committed
    return summary, version


def claim(
    client: Any, table: str, pk: str, *, version: int, claim_id: str, now: float, lease: float, expires: int | None
) -> bool:
    """Take the right to write the next summary; False when another compaction holds
    it or a summary was written since `version` was read."""
    values: dict[str, Any] = {
        ":version": number_attr(version),
        ":claim": string_attr(claim_id),
        ":until": number_attr(round(now + lease, 3)),
        ":now": number_attr(round(now, 3)),
    }
    update = "SET claim_id = :claim, claim_until = :until"
    if expires is not None:
        update += ", expires_at = if_not_exists(expires_at, :expires)"
        values[":expires"] = number_attr(expires)
    try:
        with store_errors():
            client.update_item(
                TableName=table,
                Key={"pk": string_attr(pk), "sk": string_attr(SUMMARY_SK)},
                UpdateExpression=update,
                ConditionExpression=(
                    "(attribute_not_exists(version) OR version = :version) "
                    "AND (attribute_not_exists(claim_until) OR claim_until < :now)"
                ),
                ExpressionAttributeValues=values,
            )
    except StoreUnavailable as error:
        if refused_by_condition(error):
            return False
        raise
    return True


def release(client: Any, table: str, pk: str, claim_id: str) -> None:
    """Give a claim back (the summary failed), so the next turn can retry at once."""
    try:
        with store_errors():
            client.update_item(
                TableName=table,
                Key={"pk": string_attr(pk), "sk": string_attr(SUMMARY_SK)},
                UpdateExpression="REMOVE claim_id, claim_until",
                ConditionExpression="claim_id = :claim",
                ExpressionAttributeValues={":claim": string_attr(claim_id)},
            )
    except StoreUnavailable as error:
        if not refused_by_condition(error):
            raise


def _summary_attrs(summary: Summary, expires: int | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "first_seq": number_attr(summary.first_seq),
        "last_seq": number_attr(summary.last_seq),
        "text": string_attr(summary.text),
        "created_at": number_attr(round(summary.created_at, 3)),
        "model": string_attr(summary.model),
    }
    if expires is not None:
        attrs["expires_at"] = number_attr(expires)
    return attrs


def save(
    client: Any, table: str, pk: str, summary: Summary, *, claim_id: str, version: int, expires: int | None
) -> bool:
    """Write the summary as the latest and into the listing, in one transaction that
    holds only while this compaction's claim does; False when the claim was lost."""
    from botocore.exceptions import ClientError

    attrs = _summary_attrs(summary, expires)
    latest = {"pk": string_attr(pk), "sk": string_attr(SUMMARY_SK), "version": number_attr(version + 1), **attrs}
    kept = {"pk": string_attr(pk), "sk": string_attr(compaction_sk(summary.last_seq)), **attrs}
    with store_errors():
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": latest,
                            "ConditionExpression": "claim_id = :claim",
                            "ExpressionAttributeValues": {":claim": string_attr(claim_id)},
                        }
                    },
                    {"Put": {"TableName": table, "Item": kept}},
                ]
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = error.response.get("CancellationReasons") or []
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
            raise
    return True


def list_range(client: Any, table: str, pk: str, first: int, last: int) -> list[Summary]:
    """The summaries whose last message is in `first`..`last`, in order."""
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
        "ExpressionAttributeValues": {
            ":pk": string_attr(pk),
            ":first": string_attr(compaction_sk(first)),
            ":last": string_attr(compaction_sk(last)),
        },
        "ConsistentRead": True,
    }
    found: list[Summary] = []
    with store_errors():
        while True:
            page = client.query(**request)
            for item in page.get("Items", []):
                found.append(
                    Summary(
                        first_seq=int(item["first_seq"]["N"]),
                        last_seq=int(item["last_seq"]["N"]),
                        text=item["text"]["S"],
                        created_at=float(item.get("created_at", {"N": "0"})["N"]),
                        model=item.get("model", {"S": ""})["S"],
                    )
                )
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
