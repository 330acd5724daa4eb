"""`Idempotency-Key` for non-streamed requests, with Powertools' idempotency utility on DynamoDB.

A retry with the same key and body gets the first answer back (the same ids) and
the turn is stored once; the same key with another body is a 422; a retry that
arrives while the first request still runs waits for it up to
`IDEMPOTENCY_WAIT_MS`, then gets a 409 (the official SDKs retry a 409 by
themselves). Keys are scoped to their principal and to the route, and expire after
`IDEMPOTENCY_TTL_SECONDS` (default 24 hours) through the table's TTL attribute.

Powertools' persistence layer keeps the records (its conditional writes, expiry and
payload-hash validation), driven from async code the way its own
`IdempotencyHandler` drives it: each persistence call runs in a worker thread of its
own and returns it; no thread is held while the request runs. (Its synchronous
decorator would hold one for the whole request while the request needs others from
the same pool (40 threads) for its store calls: about 40 such requests at once
wedged the process for good.)

Each record has a partition of its own (docs/storage.md, rule 6). An answer that
belongs to a session is named by a link item in the session's partition before it
is marked completed, so deleting the session deletes the record too; and if the
session was deleted while the request ran, the record is deleted here (rule 5): a
deleted session's answer is never replayed.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import anyio
import anyio.to_thread

from core.errors import ApiError, bad_request
from core.store.keys import HEAD_SK, idempotency_pk, link_item, session_pk

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_POLL_SECONDS = 0.1
_IN_PROGRESS_SECONDS = 900
"""How long an unfinished record blocks its key if its process died: a Lambda's
longest run (Powertools' own handler takes it from the Lambda context)."""
_INCONSISTENT_RETRIES = 2
"""As Powertools' handler: a record that changed between the write and the read is
retried at once this many times."""

logger = logging.getLogger("threadline.idempotency")

Json = dict[str, Any]


def validate_key(raw: str) -> str:
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not raw.isprintable():
        raise bad_request(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters.", param=HEADER, code="invalid_value"
        )
    return raw


def _unavailable() -> ApiError:
    return ApiError(503, "Idempotency records are unavailable right now; retry.", code="service_unavailable")


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """One blocking DynamoDB call in a worker thread, which is given back when it returns."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args))


def _abandoned(record: Any) -> bool:
    """An in-progress record whose request can no longer be running (its process died)."""
    expiry = record.in_progress_expiry_timestamp
    return expiry is not None and int(expiry) < int(time.time() * 1000)


class IdempotencyGuard:
    def __init__(self, table_name: str, *, client: Any, ttl_seconds: int, wait_seconds: float) -> None:
        self.table_name = table_name
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self._template: Any = None

    def _persistence(self, principal: str, route: str, key: str) -> Any:
        """Powertools' DynamoDB persistence layer for one record.

        Built and configured once (its constructor adds an event hook to the shared
        client each time: one per request would pile up on the warm container's
        client, and every DynamoDB call would run them all), then copied per record: the copy shares the client
        and the compiled configuration and carries the record's own partition and
        key prefix."""
        if self._template is None:
            from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

            config = IdempotencyConfig(
                event_key_jmespath="key",
                payload_validation_jmespath="request",
                raise_on_no_idempotency_key=True,
                expires_after_seconds=self.ttl_seconds,
            )
            template = DynamoDBPersistenceLayer(
                table_name=self.table_name,
                key_attr="pk",
                sort_key_attr="sk",
                expiry_attr="expires_at",
                boto3_client=self.client,
            )
            template.configure(config)
            self._template = template
        layer = copy.copy(self._template)
        layer.static_pk_value = idempotency_pk(principal, route, key)
        layer.function_name = f"threadline{route}"  # the sort key's prefix, as `key_prefix` sets it
        return layer

    async def run(
        self,
        *,
        principal: str,
        route: str,
        key: str,
        request: Json,
        produce: Callable[[], Coroutine[Any, Any, Json]],
    ) -> Json:
        """`produce()` once per (principal, route, key); its JSON result for every retry.

        `request` is what must be the same on a retry (the body and the headers
        that change its meaning). A result with a `session_id` belongs to that
        session of `principal`."""
        layer = self._persistence(principal, route, key)
        data = {"key": key, "request": request}
        stored = await self._claim(layer, data)
        if stored is not None:
            return stored
        try:
            answer = await produce()
        except BaseException as error:
            # Failed or cancelled (the client left, the server stops): free the key.
            await self._forget_detached(layer, data, error)
            raise
        await self._complete(layer, data, principal, answer)
        return answer

    async def _claim(self, layer: Any, data: Json) -> Json | None:
        """Take the key (None) or return the answer already stored under it; waits
        while another request holds it, up to the wait, then a 409."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
            IdempotencyItemNotFoundError,
            IdempotencyValidationError,
        )
        from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS

        deadline = time.monotonic() + self.wait_seconds
        inconsistent = 0
        while True:
            try:
                try:
                    await _in_thread(layer.save_inprogress, data, _IN_PROGRESS_SECONDS * 1000)
                    return None
                except IdempotencyItemAlreadyExistsError as exists:
                    record = exists.old_data_record or await _in_thread(layer.get_record, data)
            except IdempotencyValidationError:
                raise ApiError(
                    422,
                    f"This {HEADER} was already used with a different request body.",
                    param=HEADER,
                    code="idempotency_key_reused",
                ) from None
            except IdempotencyItemNotFoundError:
                record = None  # deleted between the write and the read: try again
            except Exception as error:
                logger.warning("Idempotency record unavailable: %s", type(error).__name__)
                raise _unavailable() from None

            if record is not None and record.status == STATUS_CONSTANTS["COMPLETED"]:
                return cast(Json, record.response_json_as_dict())
            if record is None or record.status != STATUS_CONSTANTS["INPROGRESS"] or _abandoned(record):
                # Gone or expired since the write failed: the next write takes the key.
                inconsistent += 1
                if inconsistent > _INCONSISTENT_RETRIES:
                    raise _unavailable()
                continue
            if time.monotonic() >= deadline:
                raise ApiError(
                    409,
                    f"A request with this {HEADER} is still in progress; retry later.",
                    param=HEADER,
                    code="idempotency_in_progress",
                )
            await anyio.sleep(_POLL_SECONDS)

    async def _complete(self, layer: Any, data: Json, principal: str, answer: Json) -> None:
        """Mark the record completed, linked from its session first; the answer is sent
        whatever happens here (it is stored), so failures only decide what a retry finds."""
        session_id = answer.get("session_id")
        link: dict[str, Any] | None = None
        if session_id:
            record_key = layer._get_key(layer._get_hashed_idempotency_key(data))
            # Outlives the record, which is dated when it completes.
            expires_at = int(time.time()) + self.ttl_seconds + _IN_PROGRESS_SECONDS
            item = link_item(
                session_pk(principal, str(session_id)), record_key["pk"]["S"], record_key["sk"]["S"], expires_at
            )
            link = {"pk": item["pk"], "sk": item["sk"]}
            try:
                await _in_thread(functools.partial(self.client.put_item, TableName=self.table_name, Item=item))
            except Exception as error:
                # A record its session cannot name must not be kept: a retry runs again.
                logger.warning("Idempotency link not written (%s); key released", type(error).__name__)
                await self._forget(layer, data, error)
                return
        try:
            await _in_thread(layer.save_success, data, answer)
        except Exception as error:
            # The record stays in progress until it expires: retries get a 409 meanwhile.
            logger.warning("Idempotency record not completed: %s", type(error).__name__)
            return
        if link is not None and not await self._session_exists(link["pk"]):
            # Deleted while this request ran (its deletion may have removed the record
            # before it was completed, which re-created it): nothing of it may be replayed.
            await self._forget(layer, data, None, link)

    async def _session_exists(self, pk: dict[str, str]) -> bool:
        try:
            found = await _in_thread(
                functools.partial(
                    self.client.get_item,
                    TableName=self.table_name,
                    Key={"pk": pk, "sk": {"S": HEAD_SK}},
                    ConsistentRead=True,
                    ProjectionExpression="pk",
                )
            )
        except Exception as error:
            # Cannot tell: keeping the record could replay a deleted session's answer.
            logger.warning("Session head unreadable after an idempotent turn (%s); key released", type(error).__name__)
            return False
        return "Item" in found

    def _forget_now(
        self, layer: Any, data: Json, error: BaseException | None, link: dict[str, Any] | None = None
    ) -> None:
        """Delete the record (and its link): the key is free again. Best effort:
        a record left in progress expires after `_IN_PROGRESS_SECONDS`."""
        try:
            layer.delete_record(data, error)
            if link is not None:
                self.client.delete_item(TableName=self.table_name, Key=link)
        except Exception as failure:
            logger.warning("Idempotency record not released: %s", type(failure).__name__)

    async def _forget(
        self, layer: Any, data: Json, error: BaseException | None, link: dict[str, Any] | None = None
    ) -> None:
        await _in_thread(self._forget_now, layer, data, error, link)

    async def _forget_detached(self, layer: Any, data: Json, error: BaseException) -> None:
        """`_forget` in a thread started at once, which finishes even if this task is
        cancelled again: a stopping server cancels its tasks twice (uvicorn after its
        grace, then `asyncio.run`), and an anyio shield does not hold against the second.
        `asyncio.run` waits for the default executor's threads before it returns."""
        loop = asyncio.get_running_loop()
        released = loop.run_in_executor(None, functools.partial(self._forget_now, layer, data, error))
        await asyncio.shield(released)
