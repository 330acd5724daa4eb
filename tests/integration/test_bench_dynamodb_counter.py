"""The resumable benchmark's DynamoDB counter counts what the client really sent.

Why: `make bench` reports writes and write capacity per recorded answer from this
counter (bench/dynamodb_counter.py); a counter that missed calls, counted reads as
writes or misread the capacity would make those figures wrong without anyone seeing.
"""

from __future__ import annotations

from typing import Any

from bench.dynamodb_counter import DynamoDBCounter, item_bytes


def test_counts_calls_writes_and_capacity_as_dynamodb_reports_them(local_table: tuple[Any, str]) -> None:
    client, table = local_table
    counter = DynamoDBCounter()
    counter.attach(client)
    big = {"pk": {"S": "p"}, "sk": {"S": "big"}, "data": {"B": b"x" * 1500}}

    client.put_item(TableName=table, Item=big)  # 1.5 KB: 2 WCU
    client.transact_write_items(  # transactional: 2 WCU per KB per item, 2 + 4
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "p"}, "sk": {"S": "small"}}}},
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": "p"}, "sk": {"S": "big"}},
                    "UpdateExpression": "SET n = :n",
                    "ExpressionAttributeValues": {":n": {"N": "1"}},
                }
            },
        ]
    )
    reply = client.query(
        TableName=table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
        ConsistentRead=True,
    )

    counts = counter.snapshot()
    assert counts.calls == {"PutItem": 1, "TransactWriteItems": 1, "Query": 1}
    assert (counts.writes, counts.reads) == (2, 1)
    assert counts.write_units == 8.0
    assert counts.read_units == 1.0
    assert counts.request_bytes > 2000  # the 1,500-byte binary, base64 on the wire
    assert len(reply["Items"]) == 2

    counter.reset()
    assert counter.snapshot().calls == {}


def test_item_bytes_follows_dynamodbs_sizing() -> None:
    # names + values: "pk"(2)+"abc"(3), "sk"(2)+"E5"(2), "data"(4)+10 bytes, "first"(5)+number 12 (2 digits: 2 bytes)
    item = {"pk": {"S": "abc"}, "sk": {"S": "E5"}, "data": {"B": b"0123456789"}, "first": {"N": "12"}}
    assert item_bytes(item) == 5 + 4 + 14 + 7
