"""The one DynamoDB client of the process (the warm Lambda container).

Created lazily on first use, so importing the service costs no boto3 import and
tests can point it at moto or DynamoDB Local first (`get_dynamodb_client.cache_clear()`).
The endpoint comes from boto3's own `AWS_ENDPOINT_URL_DYNAMODB` when set.

It is boto3's low-level client, created the way `boto3.client()` creates it (a
botocore session), without importing boto3 itself: boto3 adds its resource layer
and s3transfer to every cold start, and the service needs neither.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 3


@lru_cache(maxsize=1)
def get_dynamodb_client() -> Any:
    import botocore.session
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        # Threads of the async app share the client; keep enough connections for them.
        max_pool_connections=50,
    )
    return botocore.session.get_session().create_client("dynamodb", config=config)
