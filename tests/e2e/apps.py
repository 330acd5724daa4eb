"""ASGI apps the runtime under test loads by name (`THREADLINE_ASGI_APP=tests.e2e.apps:NAME`).

`probed_threadline` is the real Threadline app with one extra route, `/__probe`, that
tells what the process looks like from inside (its pid, its DynamoDB client, the
Lambda context of the invocation, the exported trace id). The others fail in the
ways the runtime must report.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

Scope = dict[str, Any]


async def _json(send: Any, payload: dict[str, Any], status: int = 200) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _probe(scope: Scope) -> dict[str, Any]:
    from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model

    from core.store.client import get_dynamodb_client

    context = scope["aws.context"]
    model = build_lambda_context_model(context)
    info = get_dynamodb_client.cache_info()
    client = get_dynamodb_client() if info.currsize else None
    return {
        "pid": os.getpid(),
        "dynamodb_client_id": id(client) if client is not None else None,
        "dynamodb_client_misses": info.misses,
        "aws_request_id": context.aws_request_id,
        "invoked_function_arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "powertools": {
            "function_name": model.function_name,
            "function_memory_size": model.function_memory_size,
            "function_arn": model.function_arn,
            "function_request_id": model.function_request_id,
        },
    }


async def probed_threadline(scope: Scope, receive: Any, send: Any) -> None:
    from handler.app import app

    if scope["type"] == "http" and scope["path"] == "/__probe":
        await _json(send, _probe(scope))
        return
    await app(scope, receive, send)


async def scope_echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the request as the app saw it."""
    message = await receive()
    await _json(
        send,
        {
            "method": scope["method"],
            "path": scope["path"],
            "query_string": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": message.get("body", b"").decode(),
        },
    )


async def multi_header(scope: Scope, receive: Any, send: Any) -> None:
    """Repeated headers and cookies, for the prelude's rules."""
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"x-multi", b"one"),
                (b"x-multi", b"two"),
                (b"set-cookie", b"a=1; Path=/"),
                (b"set-cookie", b"b=2; Path=/"),
                (b"content-length", b"5"),
                (b"connection", b"keep-alive"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": True})  # never an empty chunk
    await send({"type": "http.response.body", "body": b"hello"})


async def midstream_failure(scope: Scope, receive: Any, send: Any) -> None:
    """Two SSE frames, then an exception: the runtime must end the stream with error trailers."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
    raise RuntimeError("the model connection dropped (secret-token-123)")


async def fails_before_start(scope: Scope, receive: Any, send: Any) -> None:
    raise ValueError("failed before the first byte")


async def no_response(scope: Scope, receive: Any, send: Any) -> None:
    return


async def oversized_headers(scope: Scope, receive: Any, send: Any) -> None:
    """Headers over API Gateway's 16 KB prelude, then a body; says whether it was told to stop."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"access-control-allow-origin", b"https://chat.example"),
                (b"x-debug-trace", b"t" * 17_000),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"data: secret-body\n\n", "more_body": True})
    await receive()  # the request body
    message = await asyncio.wait_for(receive(), timeout=5)
    print(f"oversized_headers app received {message['type']}", flush=True)
    await send({"type": "http.response.body", "body": b"data: more\n\n"})


async def prelude_at_the_limit(scope: Scope, receive: Any, send: Any) -> None:
    """Headers that make the prelude and its delimiter exactly 16 KB: still sent as they are."""
    from handler.streaming.asgi import PRELUDE_LIMIT, encode_prelude

    base = [(b"content-type", b"text/plain")]
    size = len(encode_prelude(200, [*base, (b"x-pad", b"")]))
    headers = [*base, (b"x-pad", b"p" * (PRELUDE_LIMIT - size))]
    assert len(encode_prelude(200, headers)) == PRELUDE_LIMIT
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"fits"})


WORK_AFTER_RELEASE_SECONDS = 0.3


async def _answer_then_defer(scope: Scope, receive: Any, send: Any) -> None:
    """Answers at once, and defers work that waits for `$DEFER_DIR/release`, then writes
    `$DEFER_DIR/done` with the time (the system-wide monotonic clock) it finished."""
    from pathlib import Path

    from core.after_response import defer

    folder = Path(os.environ["DEFER_DIR"])

    async def work() -> None:
        while not (folder / "release").exists():  # noqa: ASYNC110 (set by another process)
            await asyncio.sleep(0.02)
        await asyncio.sleep(WORK_AFTER_RELEASE_SECONDS)  # work that takes a while
        (folder / "done").write_text(repr(time.monotonic()))

    defer(work)
    await _json(send, {"answered": True})


def deferring() -> Any:
    """An app that defers work after its response, behind the real middleware."""
    from handler.after_response import AfterResponseMiddleware

    return AfterResponseMiddleware(_answer_then_defer)


deferring_app = deferring()
