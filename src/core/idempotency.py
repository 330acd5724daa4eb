"""`Idempotency-Key` for non-streamed requests, with Powertools' idempotency utility on DynamoDB.

A retry with the same key and body gets the first answer back (the same ids) and
the turn is stored once; the same key with another body is a 422; a retry that
arrives while the first request still runs waits for it up to
`IDEMPOTENCY_WAIT_MS`, then gets a 409 (the official SDKs retry a 409 by
themselves). Keys are scoped to their principal (each principal's records live in
a partition of their own) and to the route, and expire after
`IDEMPOTENCY_TTL_SECONDS` (default 24 hours) through the table's TTL attribute.

Powertools' decorator is synchronous; the decorated function runs in a worker
thread and hands the real (async) work back to the event loop, so the request is
served on the loop as any other while Powertools keeps the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.from_thread

from core.errors import ApiError, bad_request

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_POLL_SECONDS = 0.1
_IN_PROGRESS_SECONDS = 900
"""How long an unfinished record blocks its key if its process died: a Lambda's
longest run. Powertools reads it from the Lambda context's remaining time."""


@dataclass
class _Deadline:
    """The Lambda-context shape Powertools asks for the in-progress expiry."""

    seconds: int = _IN_PROGRESS_SECONDS

    def get_remaining_time_in_millis(self) -> int:
        return self.seconds * 1000


def validate_key(raw: str) -> str:
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not raw.isprintable():
        raise bad_request(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters.", param=HEADER, code="invalid_value"
        )
    return raw


class IdempotencyGuard:
    def __init__(self, table_name: str, *, client: Any, ttl_seconds: int, wait_seconds: float) -> None:
        self.table_name = table_name
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds

    async def run(
        self,
        *,
        principal: str,
        route: str,
        key: str,
        request: dict[str, Any],
        produce: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    ) -> dict[str, Any]:
        """`produce()` once per (principal, route, key); its JSON result for every retry.

        `request` is what must be the same on a retry (the body and the headers
        that change its meaning)."""
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.ttl_seconds,
        )
        config.register_lambda_context(cast(Any, _Deadline()))
        # One persistence layer per call: Powertools configures it per function call.
        persistence = DynamoDBPersistenceLayer(
            table_name=self.table_name,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value=f"IDEMPOTENCY#{principal}",
            expiry_attr="expires_at",
            boto3_client=self.client,
        )

        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="record",
            persistence_store=persistence,
            config=config,
            key_prefix=f"threadline{route}",
        )
        def once(record: dict[str, Any]) -> dict[str, Any]:
            return anyio.from_thread.run(produce)

        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                return await anyio.to_thread.run_sync(lambda: once(record={"key": key, "request": request}))
            except IdempotencyValidationError:
                raise ApiError(
                    422,
                    f"This {HEADER} was already used with a different request body.",
                    param=HEADER,
                    code="idempotency_key_reused",
                ) from None
            except IdempotencyAlreadyInProgressError:
                if time.monotonic() >= deadline:
                    raise ApiError(
                        409,
                        f"A request with this {HEADER} is still in progress; retry later.",
                        param=HEADER,
                        code="idempotency_in_progress",
                    ) from None
                await anyio.sleep(_POLL_SECONDS)
            except IdempotencyPersistenceLayerError:
                raise ApiError(
                    503, "Idempotency records are unavailable right now; retry.", code="service_unavailable"
                ) from None
