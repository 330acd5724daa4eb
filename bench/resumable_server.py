"""Threadline's app as `make run` serves it, with its DynamoDB requests counted.

`uvicorn bench.resumable_server:app`: the app of `handler.app`, unchanged, behind a
small ASGI wrapper that answers `/bench/dynamodb` itself: `GET` gives the counts of
the process's DynamoDB client since the last `POST`, which resets them
(`bench/dynamodb_counter.py`). Every other request goes to the app as it is.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.dynamodb_counter import DynamoDBCounter
from core.store.client import get_dynamodb_client
from handler.app import app as threadline

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

COUNTER = DynamoDBCounter()
COUNTER.attach(get_dynamodb_client())


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or scope["path"] != "/bench/dynamodb":
        await threadline(scope, receive, send)
        return
    if scope["method"] == "POST":
        COUNTER.reset()
    body = json.dumps(COUNTER.snapshot().as_json()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
