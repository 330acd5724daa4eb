"""Known faults of code another branch owns, that tests here run into.

Each is an `xfail` condition that reads the faulty code itself: while the fault is
there, the tests that need it fixed are expected to fail (strictly: one that passes
anyway is reported); once it is fixed, they run as ordinary tests with no edit here.
"""

from __future__ import annotations

import inspect

import pytest


def _request_projection_is_a_reserved_word() -> bool:
    from core.store.responses import DynamoDBResponseStore

    return 'ProjectionExpression="request"' in inspect.getsource(DynamoDBResponseStore._get_request)


RESERVED_REQUEST_PROJECTION = pytest.mark.xfail(
    _request_projection_is_a_reserved_word(),
    reason=(
        "core.store.responses.DynamoDBResponseStore._get_request reads with ProjectionExpression='request', "
        "a DynamoDB reserved word: DynamoDB (and DynamoDB Local) refuse it with a ValidationException, so every "
        "background job fails after its claim (moto accepts it). Fix: ProjectionExpression='#request' with "
        "ExpressionAttributeNames={'#request': 'request'}."
    ),
    strict=True,
)
