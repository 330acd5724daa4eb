"""The relay benchmark's other servers, each in a process of its own.

- `python -m bench.relay_servers upstream DELAY GAP TOKENS`: the project's fake
  OpenAI-compatible upstream (`tests/fakes/openai_upstream.py`) answering every chat
  request with TOKENS words, the first DELAY seconds after the request and the rest GAP
  seconds apart (a non-streamed request gets the whole answer after the same time).
  It prints its port, then serves until its standard input closes.
- `passthrough_app` (run by uvicorn, `OPENAI_BASE_URL` set): the smallest useful
  relay, the baseline of what Threadline adds: FastAPI and the official `openai`
  client, forwarding the request body as it came and the answer as the SDK returns it
  (no sessions, no keys, no telemetry).

Why their own processes: a server in a thread of the load generator's process would
share its interpreter lock, and its latency would depend on the load generator's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


def _passthrough() -> FastAPI:
    from openai import AsyncOpenAI

    app = FastAPI()
    client = AsyncOpenAI(base_url=os.environ.get("OPENAI_BASE_URL"), api_key=os.environ.get("OPENAI_API_KEY", "x"))

    @app.get("/health", response_model=None)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        if not body.get("stream"):
            completion = await client.chat.completions.create(**body)
            return Response(completion.model_dump_json(), media_type="application/json")
        upstream = await client.chat.completions.create(**body)

        async def frames() -> AsyncIterator[str]:
            async with upstream:
                async for chunk in upstream:
                    yield f"data: {chunk.model_dump_json()}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    return app


def __getattr__(name: str) -> Any:
    # `passthrough_app` is built when uvicorn imports it, not when the bench imports this module.
    if name == "passthrough_app":
        return _passthrough()
    raise AttributeError(name)


def serve_upstream(delay: float, gap: float, tokens: int) -> None:
    from tests.fakes.openai_upstream import FakeUpstream, text

    reply = text([f" word{i}" for i in range(tokens)], delay=delay, gap=gap)
    with FakeUpstream(default_reply=reply) as upstream:
        print(upstream.port, flush=True)
        sys.stdin.read()  # until the benchmark closes it (or dies)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "upstream":
        raise SystemExit("usage: python -m bench.relay_servers upstream DELAY GAP TOKENS")
    serve_upstream(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
