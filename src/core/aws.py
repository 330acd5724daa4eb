"""The process's one botocore session, shared by its AWS clients (DynamoDB, Secrets
Manager): credentials are resolved and the endpoint and service data loaded once per
container, not once per client. boto3 itself is never imported (see `core.store.client`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def create_client(
    service: str, *, connect_timeout: float, read_timeout: float, max_attempts: int, **config: Any
) -> Any:
    """A low-level client with explicit timeouts and standard retries."""
    from botocore.config import Config

    settings = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        **config,
    )
    return botocore_session().create_client(service, config=settings)
