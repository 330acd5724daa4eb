"""Secrets Manager reads (the API keys, an upstream's key), with the process's one
botocore Secrets Manager client, created on first use.

Why not Powertools' parameters utility (used before): importing it imports boto3 and
every provider it has (AppConfig, SSM, a DynamoDB resource), measured here at 105 to
440 ms of a cold start against 6 to 86 ms for this second botocore client (the
DynamoDB client has already loaded botocore). Its caching is not needed either: the
key ring trusts what it read for `API_KEYS_MAX_AGE_SECONDS`, the provider reads its
key once per container. After a SnapStart restore the client is created anew
(`handler.lifecycle`). The endpoint comes from botocore's own
`AWS_ENDPOINT_URL_SECRETS_MANAGER` when set (tests, benchmarks).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 3
MAX_ATTEMPTS = 2
"""Short: a keyed request may wait on a refresh of the keys, and must not outlive API
Gateway's 29 s (the key ring then serves its last keys, within its stale limit)."""


@lru_cache(maxsize=1)
def get_secrets_client() -> Any:
    from core.aws import create_client

    return create_client(
        "secretsmanager",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_attempts=MAX_ATTEMPTS,
    )


def read_secret(arn: str) -> str:
    """The secret's current value as text (a binary secret is decoded as UTF-8)."""
    response = get_secrets_client().get_secret_value(SecretId=arn)
    if "SecretString" in response:
        return str(response["SecretString"])
    return bytes(response["SecretBinary"]).decode("utf-8")
