"""DynamoDB's failures, read in one place: what the store's callers see of them.

Botocore's errors (after its own retries) become `StoreUnavailable`; a refused
condition is told apart from every other failure by `refused_by_condition`, whether
it comes bare (a `ClientError`) or wrapped (the `StoreUnavailable` it caused).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.store.base import StoreUnavailable

CONDITION_FAILED = "ConditionalCheckFailedException"


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn botocore's failures (after its own retries) into `StoreUnavailable`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable("the session store did not answer") from error


def refused_by_condition(error: BaseException | None) -> bool:
    """Whether DynamoDB refused a write because its condition did not hold (and nothing
    else went wrong): a `ClientError` with that code, or a `StoreUnavailable` it caused."""
    from botocore.exceptions import ClientError

    if isinstance(error, StoreUnavailable):
        error = error.__cause__
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == CONDITION_FAILED


@contextmanager
def unless_refused(refused: list[bool]) -> Iterator[None]:
    """Run a conditional write; a refused condition is recorded in `refused` instead of
    raised, every other failure is a `StoreUnavailable`."""
    try:
        with store_errors():
            yield
    except StoreUnavailable as error:
        if not refused_by_condition(error):
            raise
        refused.append(True)
