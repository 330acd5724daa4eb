"""The one DynamoDB client of the process (the warm Lambda container).

Created lazily on first use, so importing the service costs no boto3 import and
tests can point it at moto or DynamoDB Local first (`get_dynamodb_client.cache_clear()`).
The endpoint comes from boto3's own `AWS_ENDPOINT_URL_DYNAMODB` when set.

It is boto3's low-level client, created the way `boto3.client()` creates it (a
botocore session), without importing boto3 itself: boto3 adds its resource layer
and s3transfer to every cold start, and the service needs neither.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 3


@lru_cache(maxsize=1)
def get_dynamodb_client() -> Any:
    from core.aws import create_client

    client = create_client(
        "dynamodb",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_attempts=MAX_ATTEMPTS,
        # Threads of the async app share the client; keep enough connections for them.
        max_pool_connections=50,
        # The store builds every request itself; botocore's client-side check of each
        # parameter against the model costs ~0.15 ms of CPU per call, and DynamoDB
        # validates them anyway (a bad one is a ValidationException, a ClientError).
        parameter_validation=False,
    )
    client.meta.events.register("before-parse.dynamodb.Query", decode_query_as_json, unique_id="threadline-query")
    return client


_BINARY_TYPES = (b'"B":', b'"BS":')


def decode_query_as_json(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """Decode a successful Query's body with `json.loads` instead of botocore's shape walk.

    Why: every turn reads its window in one Query (the head and 40 messages), and
    botocore's parser visits every attribute value against the service model: about
    0.5 ms of CPU per read here, against 0.05 ms for `json.loads`. The low-level
    client's result is the wire JSON itself for every attribute type but binary ones
    (`B`, `BS`: base64 on the wire, bytes once parsed), so a body that may hold one is
    left to botocore (a false alarm, such text inside a message, only costs the slow
    path). Errors are left to botocore too. botocore merges `customized_response_dict`
    into what it parses, and parses the emptied body into the response metadata alone.
    """
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes) or not body:
        return
    if any(marker in body for marker in _BINARY_TYPES):
        return
    customized_response_dict.update(json.loads(body))
    response_dict["body"] = b"{}"
