"""One HTTP request through the ASGI app, its response streamed to the Runtime API.

The scope and the request body come from Mangum's event handlers (the caller infers
the handler); Mangum's own `HTTPCycle` is not used because it buffers the body.
Here each `http.response.body` message the app sends is written to the Runtime API
as its own HTTP chunk, and the app's `send` returns only once the socket has taken
it: an SSE frame leaves the function when the app emits it.

- `http.response.start` opens the streamed response and sends the prelude at once
  (status and headers are final by then), so headers such as
  `X-Hermes-Session-Id` reach the client before the first body byte.
- An exception before that is reported to `.../error` (API Gateway answers 502).
- Headers that would make the prelude larger than API Gateway reads (16 KB with
  its delimiter; a larger one fails the whole response) are the app's fault,
  caught before the first byte: the client gets a small valid prelude, a 500
  and an OpenAI-shaped error (`code: "response_headers_too_large"`), the log
  names the largest headers, and the app is told `http.disconnect` so it stops
  (a chat turn nobody receives is not stored). A 500 with a body rather than a
  report to `.../error`, because `.../error` becomes API Gateway's generic 502
  (or a Function URL's raw error), which tells the client nothing it can act on.
- An exception after it ends the stream with the error trailers; the exception's
  text stays in the function's logs (a trailer may be forwarded to a client).
- `receive()` gives the request body once, then waits until the response is over
  or its stream was cut, and says `http.disconnect`: Starlette's `StreamingResponse`
  listens for a disconnect while it streams, and must not hear one early.
- A stream the Runtime API cuts (it closes or resets the connection, or answers
  before the body ended; see `ResponseStream`) is the client leaving, as uvicorn
  reports a closed socket: `receive()` says `http.disconnect` at once, also to a
  call already waiting, so the app cancels its work (the model call) and stores
  nothing; later sends are dropped without an error, and the invocation ends
  normally so the runtime goes on to the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from handler.streaming.runtime_api import PRELUDE_DELIMITER, ErrorReport, ResponseStream, RuntimeAPI

logger = logging.getLogger("threadline.runtime")

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"}
)
"""Response headers that describe one HTTP connection, not the response: Lambda and
API Gateway frame the streamed body themselves (`content-length` included)."""

PRELUDE_LIMIT = 16 * 1024
"""API Gateway needs the prelude and its delimiter within the first 16 KB."""
KEPT_ON_OVERSIZE = ("access-control-", "vary")
"""Headers kept on the error that replaces an oversized prelude, so a browser can read it."""


def encode_prelude(status: int, raw_headers: Iterable[tuple[bytes, bytes] | list[bytes]]) -> bytes:
    """The JSON prelude (`statusCode`, `headers`, `cookies`) and the 8-NUL delimiter.

    Header values are strings, never arrays (API Gateway answers 502 to an array):
    repeated headers are joined with ", ", and each `Set-Cookie` goes to `cookies`.
    """
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name_bytes, value_bytes in raw_headers:
        name = bytes(name_bytes).decode("latin-1").lower()
        value = bytes(value_bytes).decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
        elif name not in HOP_BY_HOP:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    prelude = json.dumps({"statusCode": status, "headers": headers, "cookies": cookies}, separators=(",", ":"))
    return prelude.encode() + PRELUDE_DELIMITER


def oversized_prelude_error(size: int, raw_headers: Iterable[tuple[bytes, bytes] | list[bytes]]) -> tuple[bytes, bytes]:
    """The prelude and body of the 500 that replaces a response whose prelude is `size` bytes."""
    kept = [
        (bytes(name), bytes(value))
        for name, value in raw_headers
        if bytes(name).decode("latin-1").lower().startswith(KEPT_ON_OVERSIZE)
    ]
    headers = [(b"content-type", b"application/json"), *kept]
    prelude = encode_prelude(500, headers)
    if len(prelude) > PRELUDE_LIMIT:  # the kept headers alone are too large: drop them
        prelude = encode_prelude(500, headers[:1])
    message = (
        f"The response's headers are too large to send ({size:,} bytes of status and headers; "
        f"API Gateway accepts at most {PRELUDE_LIMIT:,}). This is a fault of the service, not of the request."
    )
    error = {"message": message, "type": "server_error", "param": None, "code": "response_headers_too_large"}
    return prelude, json.dumps({"error": error}, separators=(",", ":")).encode()


def _largest_headers(raw_headers: Iterable[tuple[bytes, bytes] | list[bytes]]) -> str:
    """The names and sizes of the largest headers (never their values: they may be secrets)."""
    sizes = sorted(((len(bytes(value)), bytes(name).decode("latin-1")) for name, value in raw_headers), reverse=True)
    return ", ".join(f"{name} ({size:,} bytes)" for size, name in sizes[:5])


@dataclass
class Outcome:
    """What happened to one invocation, for the runtime's log line."""

    status: int | None = None
    bytes_sent: int = 0
    chunks_sent: int = 0
    error: str | None = None
    reported_to: str | None = None
    """`error` (the `/error` endpoint), `trailers`, `response` (a 500 in place of the
    app's), or None when all went well."""
    client_gone: bool = False
    """The stream was cut before its end (the app was told `http.disconnect`)."""


class StreamingHTTPCycle:
    def __init__(self, api: RuntimeAPI, request_id: str, scope: Scope, body: bytes) -> None:
        self.api = api
        self.request_id = request_id
        self.scope = scope
        self.body = body
        self.stream: ResponseStream | None = None
        self.outcome = Outcome()
        self._body_given = False
        self._body_done = False
        self._disconnected = asyncio.Event()
        """Set when the response is over or its stream was cut: `receive()` then says so."""

    async def receive(self) -> Message:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    def _client_gone(self) -> None:
        self.outcome.client_gone = True
        self._disconnected.set()

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            if self.stream is not None:
                raise RuntimeError("http.response.start sent twice")
            status = int(message["status"])
            raw_headers = list(message.get("headers") or [])
            prelude = encode_prelude(status, raw_headers)
            if len(prelude) > PRELUDE_LIMIT:
                await self._refuse_oversized(status, raw_headers, len(prelude))
                return
            self.stream = await self.api.open_stream(self.request_id, prelude, on_lost=self._client_gone)
            self.outcome.status = status
        elif kind == "http.response.body":
            if self.stream is None:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self._body_done or self.stream.lost:
                return  # nobody reads it any more: dropped, as uvicorn drops it
            await self.stream.write(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._body_done = True
                self._disconnected.set()

    async def _refuse_oversized(self, status: int, raw_headers: list[Any], size: int) -> None:
        """Answer a 500 in place of a response API Gateway would fail, and stop the app."""
        logger.error(
            "The app's %d response has %d bytes of status and headers, over API Gateway's %d: "
            "answered 500 instead. Largest headers: %s",
            status,
            size,
            PRELUDE_LIMIT,
            _largest_headers(raw_headers),
        )
        prelude, body = oversized_prelude_error(size, raw_headers)
        self.stream = await self.api.open_stream(self.request_id, prelude, on_lost=self._client_gone)
        await self.stream.write(body)
        self.outcome.status = 500
        self.outcome.error = "ResponseHeadersTooLarge"
        self.outcome.reported_to = "response"
        self._body_done = True  # the app's own body is dropped
        self._disconnected.set()  # and the app is told nobody reads it

    async def run(self, app: ASGIApp) -> Outcome:
        started = time.perf_counter()
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as error:
            logger.exception("The app failed while serving %s %s", self.scope.get("method"), self.scope.get("path"))
            self.outcome.error = type(error).__name__
            if self.stream is None:
                self.outcome.reported_to = "error"
                await self.api.post_error(self.request_id, ErrorReport.from_exception(error, "Function.Unhandled"))
            else:
                self.outcome.reported_to = "trailers"
                report = ErrorReport.from_exception(error, "Function.ResponseStreamError", details=False)
                await self._finish(report)
            return self.outcome
        finally:
            self._disconnected.set()
        if self.stream is None:
            self.outcome.error = "NoResponse"
            self.outcome.reported_to = "error"
            report = ErrorReport("Runtime.NoResponse", "NoResponse", "The app returned without sending a response.")
            await self.api.post_error(self.request_id, report)
        else:
            await self._finish(None)
        logger.debug("Served in %.1f ms", (time.perf_counter() - started) * 1000)
        return self.outcome

    async def _finish(self, report: ErrorReport | None) -> None:
        assert self.stream is not None
        await self.stream.finish(report)
        self.outcome.bytes_sent = self.stream.bytes_sent
        self.outcome.chunks_sent = self.stream.chunks_sent
