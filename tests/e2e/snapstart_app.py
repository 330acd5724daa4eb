"""An app that creates its DynamoDB client at init, as a SnapStart function primed
before its snapshot would, and answers with what it sees now.

With `FAIL_AFTER_RESTORE=1` it also registers an after-restore hook that fails.
"""

from __future__ import annotations

import json
import os
from typing import Any

from core.store.client import get_dynamodb_client
from handler import lifecycle

INIT_CLIENT = get_dynamodb_client()
"""The client made before the snapshot (held, so its id cannot be reused)."""


def _fail() -> None:
    raise RuntimeError("the connection pool could not be rebuilt")


if os.environ.get("FAIL_AFTER_RESTORE") == "1":
    lifecycle.after_restore(_fail)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    client = get_dynamodb_client()
    info = get_dynamodb_client.cache_info()
    body = json.dumps({"init_client_id": id(INIT_CLIENT), "client_id": id(client), "misses": info.misses}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
