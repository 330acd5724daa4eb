"""A client of the Lambda Runtime API: HTTP/1.1 over asyncio streams, framed by h11.

h11 (a maintained, sans-I/O HTTP/1.1 implementation; already in the function's
package as a dependency of httpx, which the `openai` package uses) parses every
answer and frames every request: the chunked body of a streamed response and its
trailers included. Python's `http.client` cannot be used for the streamed
response: it always ends a chunked body with its own terminator, so it cannot
send trailers, and it buffers. Each request uses a connection of its own and
closes it when done (AWS asks a streaming runtime to close the connection after
it has written the response).

Protocol, as AWS documents it:

- https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html: `GET
  /2018-06-01/runtime/invocation/next` returns the event, with the request id, the
  deadline (epoch ms), the invoked function ARN and the X-Ray trace header in the
  `Lambda-Runtime-*` response headers; `POST .../invocation/{id}/error` and `POST
  /2018-06-01/runtime/init/error` take `{"errorMessage", "errorType", "stackTrace"}`
  with a `Lambda-Runtime-Function-Error-Type` header; a 500 answer means the
  container is broken and the runtime should exit.
- `POST .../invocation/{id}/response` without a response mode header takes the whole
  payload at once (a buffered response): how the runtime answers a background job,
  an asynchronous invocation whose answer nobody reads.
- https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming:
  a streamed response sets `Lambda-Runtime-Function-Response-Mode: streaming` and
  `Transfer-Encoding: chunked`, and reports an error that happens after it began in
  the trailers `Lambda-Runtime-Function-Error-Type` and
  `Lambda-Runtime-Function-Error-Body` (base64), declared in a `Trailer` header at
  the start of the request; `.../error` is only allowed before the response began.
- SnapStart (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-restore):
  after init, `GET /2018-06-01/runtime/restore/next` returns (200) once the
  snapshot was restored in a new execution environment; a failure of the
  after-restore hooks goes to `POST /2018-06-01/runtime/restore/error` with the
  error type `Runtime.AfterRestoreError` (as AWS's Python runtime client sends it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import h11

logger = logging.getLogger("threadline.runtime")

API_VERSION = "2018-06-01"
RESPONSE_MODE_HEADER = "Lambda-Runtime-Function-Response-Mode"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\x00" * 8
USER_AGENT = "threadline-streaming-runtime/1"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"

_HEAD_LIMIT = 64 * 1024
"""Largest response head (status line and headers) accepted from the Runtime API."""
_READ_SIZE = 64 * 1024


class RuntimeAPIError(Exception):
    """The Runtime API answered with a status this runtime cannot go on from."""

    def __init__(self, status: int, path: str, body: bytes) -> None:
        super().__init__(f"the Runtime API answered {status} to {path}: {body[:200]!r}")
        self.status = status
        self.path = path
        self.body = body


class ContainerError(RuntimeAPIError):
    """A 500: "Container error. Non-recoverable state. Runtime should exit promptly." """


@dataclass(frozen=True)
class Invocation:
    """One event from `/runtime/invocation/next` and what its headers say about it."""

    request_id: str
    deadline_ms: int
    invoked_function_arn: str
    body: bytes
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class ErrorReport:
    """An error as Lambda takes it: a category for the `...-Error-Type` header and the
    `{"errorMessage", "errorType", "stackTrace"}` body."""

    category: str
    error_type: str
    message: str
    stack_trace: list[str] = field(default_factory=list)

    @classmethod
    def from_exception(cls, error: BaseException, category: str, *, details: bool = True) -> ErrorReport:
        """`details=False` leaves out the exception's text and stack (only its class is
        named): for reports that may reach a client."""
        if not details:
            return cls(category, type(error).__name__, "The function failed; see its logs for the request id.")
        origin = error.__cause__ if error.__cause__ is not None else error  # where it really failed
        stack = [line.rstrip("\n") for line in traceback.format_tb(origin.__traceback__)]
        return cls(category, type(error).__name__, str(error) or type(error).__name__, stack)

    def payload(self) -> bytes:
        return json.dumps(
            {"errorMessage": self.message, "errorType": self.error_type, "stackTrace": self.stack_trace},
            separators=(",", ":"),
        ).encode()

    def trailers(self) -> list[tuple[str, str]]:
        """The error as HTTP trailers: `Error-Body` is base64 so no byte can break the framing."""
        body = base64.b64encode(self.payload()).decode("ascii")
        return [(ERROR_TYPE_HEADER, _header_value(self.category)), (ERROR_BODY_TRAILER, body)]


def _header_value(value: str) -> str:
    """A value safe on one header line (no CR, LF or non-latin-1 characters)."""
    cleaned = "".join(ch if " " <= ch <= "~" else "_" for ch in value).strip()
    return cleaned or "Unknown"


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def _read_response(reader: asyncio.StreamReader, conn: h11.Connection, path: str) -> _Response:
    """The answer on `conn`, parsed by h11 (a malformed one is a `RuntimeAPIError`)."""
    status = 0
    headers: dict[str, str] = {}
    pieces: list[bytes] = []
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ_SIZE)
                if not data and status == 0 and not conn.trailing_data[0]:
                    raise ConnectionError(f"the Runtime API closed the connection before answering {path}")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
            elif isinstance(event, h11.Data):
                pieces.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return _Response(status, headers, b"".join(pieces))
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError as error:
        raise RuntimeAPIError(0, path, str(error).encode()) from error
    raise ConnectionError(f"the Runtime API closed the connection before answering {path}")


def _request_head(address: str, method: str, path: str, headers: dict[str, str]) -> h11.Request:
    fields = [("Host", address), ("User-Agent", USER_AGENT), *headers.items(), ("Connection", "close")]
    return h11.Request(method=method, target=path, headers=fields)


class ResponseStream:
    """One streamed response: the request is open, the prelude sent; body chunks follow.

    `write` sends each chunk as its own HTTP chunk and waits until the socket took it;
    `finish` sends the last chunk (with the error trailers when given) and returns the
    Runtime API's answer. The answer is read from the moment the stream opens: the
    Runtime API says nothing on this connection until the body has ended, so an answer
    or a closed connection before that means the response is over for whoever was
    reading it (Lambda cut the stream, or refused it). That, or a write the socket
    refuses (reset, broken pipe), marks the stream `lost`: later writes are skipped
    and `on_lost` is called once, so the app can be told its client has gone.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        path: str,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._path = path
        self._on_lost = on_lost
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.broken: BaseException | None = None
        self.finished = False
        self._answer: asyncio.Task[_Response] = asyncio.ensure_future(_read_response(reader, conn, path))
        self._answer.add_done_callback(self._answered)

    @property
    def lost(self) -> bool:
        return self.broken is not None

    def _answered(self, task: asyncio.Task[_Response]) -> None:
        """The Runtime API answered or closed the connection; before `finish`, the stream is lost."""
        if task.cancelled():
            return
        error = task.exception()
        if self.finished:
            return  # `finish` reads the answer (or the error) itself
        if error is None:
            status = task.result().status
            error = ConnectionError(f"the Runtime API answered {status} before the response body ended")
        self._lose(error)

    def _lose(self, error: BaseException) -> None:
        if self.broken is not None:
            return
        self.broken = error
        # A client leaving is not a fault of the function: no traceback, no error level.
        logger.info("The response stream was cut after %d bytes (%s): the client has gone", self.bytes_sent, error)
        if self._on_lost is not None:
            self._on_lost()

    async def write(self, data: bytes) -> None:
        if not data or self.broken is not None or self.finished:
            return  # an empty chunk would end the body: never send one
        self._writer.write(self._conn.send(h11.Data(data=data)) or b"")
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as error:
            self._lose(error)
            return
        self.bytes_sent += len(data)
        self.chunks_sent += 1

    async def finish(self, error: ErrorReport | None = None) -> int | None:
        """End the body; the Runtime API's status, or None if the connection was lost."""
        if self.finished:
            return None
        self.finished = True
        try:
            if self.broken is not None:
                return None
            end = h11.EndOfMessage(headers=error.trailers() if error is not None else [])
            self._writer.write(self._conn.send(end) or b"")
            await self._writer.drain()
            response = await self._answer
            if response.status >= 300:
                logger.error("The Runtime API refused the streamed response: %s %r", response.status, response.body)
            return response.status
        except (ConnectionError, OSError, RuntimeAPIError) as lost:
            logger.warning("The Runtime API connection was lost while ending the stream: %s", lost)
            return None
        finally:
            self._answer.cancel()
            await _close(self._writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class RuntimeAPI:
    """The Runtime API at `host:port` (the function's `AWS_LAMBDA_RUNTIME_API`)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"AWS_LAMBDA_RUNTIME_API must be host:port, got {address!r}")
        self.address = address
        self.host = host.strip("[]")
        self.port = int(port)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Every chunk goes out when it is written, never held back by Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer, h11.Connection(h11.CLIENT, max_incomplete_event_size=_HEAD_LIMIT)

    async def _request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> _Response:
        reader, writer, conn = await self._connect()
        try:
            all_headers = dict(headers or {})
            if method != "GET":
                all_headers["Content-Length"] = str(len(body))
            out = conn.send(_request_head(self.address, method, path, all_headers)) or b""
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            writer.write(out)
            await writer.drain()
            response = await _read_response(reader, conn, path)
        finally:
            await _close(writer)
        if response.status >= 500:
            raise ContainerError(response.status, path, response.body)
        return response

    async def next_invocation(self) -> Invocation:
        """Wait (as long as it takes) for the next event."""
        path = f"/{API_VERSION}/runtime/invocation/next"
        response = await self._request("GET", path)
        if response.status != 200:
            raise RuntimeAPIError(response.status, path, response.body)
        headers = response.headers
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        if not request_id:
            raise RuntimeAPIError(response.status, path, b"no Lambda-Runtime-Aws-Request-Id header")
        deadline = headers.get("lambda-runtime-deadline-ms", "")
        return Invocation(
            request_id=request_id,
            deadline_ms=int(deadline) if deadline.isascii() and deadline.isdigit() else 0,
            invoked_function_arn=headers.get("lambda-runtime-invoked-function-arn", ""),
            body=response.body,
            trace_id=headers.get("lambda-runtime-trace-id") or None,
            client_context=headers.get("lambda-runtime-client-context") or None,
            cognito_identity=headers.get("lambda-runtime-cognito-identity") or None,
            tenant_id=headers.get("lambda-runtime-aws-tenant-id") or None,
        )

    async def restore_next(self) -> None:
        """SnapStart: wait until this environment was restored from the snapshot."""
        path = f"/{API_VERSION}/runtime/restore/next"
        response = await self._request("GET", path)
        if response.status != 200:
            raise RuntimeAPIError(response.status, path, response.body)

    async def post_response(self, request_id: str, payload: bytes) -> int:
        """Answer an invocation with one buffered payload (no response mode header): what
        an asynchronous invocation, which nobody reads as a stream, is answered with."""
        path = f"/{API_VERSION}/runtime/invocation/{request_id}/response"
        response = await self._request("POST", path, headers={"Content-Type": "application/json"}, body=payload)
        if response.status >= 300:
            logger.error("The Runtime API refused the response to %s: %s", path, response.status)
        return response.status

    async def post_error(self, request_id: str, error: ErrorReport) -> int:
        """Report a failed invocation (only before its response began)."""
        path = f"/{API_VERSION}/runtime/invocation/{request_id}/error"
        return await self._post_error(path, error)

    async def post_init_error(self, error: ErrorReport) -> int:
        """Report that the function could not start."""
        return await self._post_error(f"/{API_VERSION}/runtime/init/error", error)

    async def post_restore_error(self, error: ErrorReport) -> int:
        """SnapStart: report that the after-restore hooks failed."""
        return await self._post_error(f"/{API_VERSION}/runtime/restore/error", error)

    async def _post_error(self, path: str, error: ErrorReport) -> int:
        headers = {"Content-Type": "application/json", ERROR_TYPE_HEADER: _header_value(error.category)}
        response = await self._request("POST", path, headers=headers, body=error.payload())
        if response.status >= 300:
            logger.error("The Runtime API refused the error report to %s: %s", path, response.status)
        return response.status

    async def open_stream(
        self, request_id: str, prelude: bytes, on_lost: Callable[[], None] | None = None
    ) -> ResponseStream:
        """Start the streamed response: the request head and the prelude's chunk, at once.
        `on_lost` is called if the stream is cut before it ends (see `ResponseStream`)."""
        path = f"/{API_VERSION}/runtime/invocation/{request_id}/response"
        head = _request_head(
            self.address,
            "POST",
            path,
            {
                RESPONSE_MODE_HEADER: "streaming",
                "Transfer-Encoding": "chunked",
                "Content-Type": HTTP_INTEGRATION_CONTENT_TYPE,
                "Trailer": f"{ERROR_TYPE_HEADER}, {ERROR_BODY_TRAILER}",
            },
        )
        reader, writer, conn = await self._connect()
        writer.write((conn.send(head) or b"") + (conn.send(h11.Data(data=prelude)) or b""))
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            await _close(writer)
            raise
        return ResponseStream(reader, writer, conn, path, on_lost)
