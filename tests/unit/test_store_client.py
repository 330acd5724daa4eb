"""The DynamoDB client decodes a Query's body with `json.loads`: results as botocore's own parser gives them."""

from __future__ import annotations

import base64
import json
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import create_parser

from core.store.base import NewTurn, SessionKey
from core.store.client import decode_query_as_json, get_dynamodb_client
from core.store.dynamodb import DynamoDBSessionStore, query_newest_first, session_pk


def _query_output_shape() -> Any:
    client = botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client.meta.service_model.operation_model("Query").output_shape


def _parse(body: dict[str, Any], *, fast: bool) -> dict[str, Any]:
    """What the client returns for this body: botocore's parse, after our hook when `fast`."""
    response = {"body": json.dumps(body).encode(), "headers": {}, "status_code": 200}
    customized: dict[str, Any] = {}
    if fast:
        decode_query_as_json(response, customized)
    parsed: dict[str, Any] = create_parser("json").parse(response, _query_output_shape())
    parsed.update(customized)
    return parsed


EVERY_TYPE = {
    "Items": [
        {
            "pk": {"S": "SESSION#o#s"},
            "seq": {"N": "12"},
            "msg": {"S": json.dumps({"role": "user", "content": 'ü 😀 "S": {"N": "1"}'})},
            "list": {"L": [{"S": "x"}, {"NULL": True}, {"BOOL": False}, {"N": "1.5"}]},
            "map": {"M": {"strings": {"SS": ["a", "b"]}, "numbers": {"NS": ["1", "2"]}}},
        }
    ],
    "Count": 1,
    "ScannedCount": 1,
    "LastEvaluatedKey": {"pk": {"S": "SESSION#o#s"}, "sk": {"S": "MSG#000000000001"}},
    "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5},
}


def test_a_query_decoded_as_json_equals_botocores_parse() -> None:
    assert _parse(EVERY_TYPE, fast=True) == _parse(EVERY_TYPE, fast=False)


def test_a_body_that_may_hold_binary_attributes_is_left_to_botocore() -> None:
    body = {"Items": [{"pk": {"S": "p"}, "blob": {"B": base64.b64encode(b"\x00\x01").decode()}}], "Count": 1}
    response = {"body": json.dumps(body).encode(), "headers": {}, "status_code": 200}
    customized: dict[str, Any] = {}
    decode_query_as_json(response, customized)
    assert customized == {}
    assert _parse(body, fast=True)["Items"][0]["blob"] == {"B": b"\x00\x01"}  # bytes, as botocore gives them


def test_an_error_is_left_to_botocore() -> None:
    response = {"body": b'{"__type":"ResourceNotFoundException"}', "headers": {}, "status_code": 400}
    customized: dict[str, Any] = {}
    decode_query_as_json(response, customized)
    assert customized == {} and response["body"] == b'{"__type":"ResourceNotFoundException"}'


async def test_the_process_client_reads_a_window_as_a_plain_botocore_client_does(moto_table: tuple[Any, str]) -> None:
    client, name = moto_table
    assert client is get_dynamodb_client()
    key = SessionKey("owner", "s1")
    texts = ["plain", 'says "B": "AAE=" in text', "ü 😀 \\u0000", '{"S": "not an attribute"}']
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    store = DynamoDBSessionStore(name, ttl_days=1, client=client)
    await store.append(key, NewTurn(messages=messages, system=[], title="t"), None, fresh_session=True)
    plain = botocore.session.get_session().create_client("dynamodb")  # no hook: botocore's parser

    fast, _ = query_newest_first(client, name, session_pk(key), 10)
    slow, _ = query_newest_first(plain, name, session_pk(key), 10)

    assert fast == slow
    assert [m["content"] for m in (await store.load(key, 10)).messages] == texts


def test_a_missing_table_is_still_botocores_error(moto_table: tuple[Any, str]) -> None:
    client, _ = moto_table
    with pytest.raises(ClientError) as caught:
        client.query(
            TableName="missing", KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "x"}}
        )
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
