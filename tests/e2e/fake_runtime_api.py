"""A fake Lambda Runtime API on 127.0.0.1 that records what a runtime sends, and is as
strict about it as Lambda is.

It serves the endpoints a runtime uses (`/2018-06-01/runtime/invocation/next`,
`.../{id}/response`, `.../{id}/error`, `/2018-06-01/runtime/init/error`, and with
`snap_start=True` the SnapStart pair `/2018-06-01/runtime/restore/next` and
`.../restore/error`), queues the events a test gives it, and records each response:
the request headers, every HTTP chunk of a chunked body with the time it arrived
(`time.monotonic()`), and the trailers.

Every request is parsed by h11, a real HTTP/1.1 parser, independently of the
runtime's own encoder, and checked the way AWS's Runtime Interface Emulator (the
Go source of what Lambda enforces) checks it:

- malformed framing (a bad chunk size, a missing CRLF, a bad header line), an
  error-body trailer that is not strict base64, or `/invocation/next` before
  `/restore/next` under SnapStart is a protocol error: it is recorded in
  `protocol_errors` and leaving the `with` block raises `AssertionError`, so the
  test fails even though the runtime never saw a refusal;
- `Lambda-Runtime-Function-Response-Mode` must be exactly `streaming` (any other
  value: 400, recorded in `refusals`); without it the body is a buffered response;
- error types that do not match `(Runtime|Function).[A-Z][a-zA-Z]+` become
  `Runtime.Unknown`, as Lambda rewrites them (`PostedError.error_type_header`,
  `StreamedResponse.error_type`; what was sent stays in `raw_error_type`);
- a second response or error for one request id is refused with 403 (`refusals`);
- the response's `Content-Type` is passed on (`StreamedResponse.content_type`).

`queue(event, cut_after=N)` plays Lambda dropping a streamed response whose client
went away: once N chunks of the body have arrived (the prelude's chunk counts), or
with `cut_after=b"..."` once a chunk holding those bytes has arrived, the fake
closes the connection without answering (`cut_with_reset=True`: it resets it, so
the runtime's next write fails with ECONNRESET). `StreamedResponse.cut_at` says
when.

SnapStart (`snap_start=True`): `/restore/next` is held until the test calls
`restore()` (the snapshot was taken at `snapshot_taken`, and restored later in a
new environment); a report to `/restore/error` lands in `restore_errors`.

`close()` makes `/next` answer 500 ("container error, runtime should exit"), so a
runtime under test stops by itself. Used by the e2e tests, `make bench`
(`bench/streaming.py`), `deploy/coldstart.py` and `make invoke-stream`
(`deploy/invoke_stream.py`), which prints chunks as they come (`on_chunk`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import queue
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import h11

DELIMITER = b"\x00" * 8
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:threadline-test"
API = "/2018-06-01/runtime"
ERROR_TYPE_PATTERN = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")
"""What Lambda accepts as an error type; anything else is reported as `Runtime.Unknown`."""
_HEAD_LIMIT = 64 * 1024


def lambda_error_type(raw: str | None) -> str:
    """The error type as Lambda records it."""
    return raw if raw is not None and ERROR_TYPE_PATTERN.fullmatch(raw) else "Runtime.Unknown"


@dataclass
class Chunk:
    at: float
    """`time.monotonic()` when the chunk had fully arrived."""
    data: bytes


@dataclass
class StreamedResponse:
    headers: dict[str, str]
    """The POST's request headers, by lower-case name."""
    started_at: float
    chunks: list[Chunk] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    complete: bool = False
    raw_head: str = ""
    cut_at: float | None = None
    """`time.monotonic()` when the fake cut the connection (`queue(..., cut_after=N)`)."""
    error_type: str | None = None
    """The error-type trailer as Lambda records it (`Runtime.Unknown` for a malformed one)."""

    @property
    def content_type(self) -> str | None:
        """What Lambda passes on to the invoker as the response's content type."""
        return self.headers.get("content-type")

    @property
    def body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)

    def split(self) -> tuple[dict[str, Any], bytes]:
        """The JSON prelude and the payload after the 8-NUL delimiter."""
        prelude, delimiter, payload = self.body.partition(DELIMITER)
        if not delimiter:
            raise AssertionError(f"no 8-NUL delimiter in the streamed body: {self.body[:200]!r}")
        return json.loads(prelude), payload

    def payload_chunks(self) -> list[Chunk]:
        """The chunks after the one that carries the prelude and its delimiter."""
        seen = b""
        for index, chunk in enumerate(self.chunks):
            seen += chunk.data
            if DELIMITER in seen:
                return self.chunks[index + 1 :]
        raise AssertionError("no delimiter")

    def error_trailer(self) -> dict[str, Any] | None:
        encoded = self.trailers.get("lambda-runtime-function-error-body")
        return json.loads(base64.b64decode(encoded, validate=True)) if encoded else None


@dataclass
class PostedError:
    error_type_header: str
    """The error type as Lambda records it (`Runtime.Unknown` for a malformed one)."""
    body: dict[str, Any]
    raw_error_type: str | None = None
    """The `Lambda-Runtime-Function-Error-Type` header as sent."""


@dataclass
class Refusal:
    status: int
    path: str
    reason: str


@dataclass
class Invocation:
    request_id: str
    event: bytes
    headers: dict[str, str]
    cut_after: int | bytes | None = None
    """Cut the streamed response once this many body chunks (or a chunk holding these bytes) arrived."""
    cut_with_reset: bool = False
    taken_at: float | None = None
    response: StreamedResponse | None = None
    error: PostedError | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _cut_here(cut_after: int | bytes | None, chunks: list[Chunk]) -> bool:
    if isinstance(cut_after, bytes):
        return cut_after in chunks[-1].data
    return cut_after is not None and len(chunks) >= cut_after


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime stopped while it waited on `/next` is not an error of the fake's."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _ConnectionGone(Exception):
    """The runtime closed the connection (or the fake cut it)."""


class FakeRuntimeAPI:
    def __init__(
        self,
        *,
        function_arn: str = FUNCTION_ARN,
        timeout_seconds: float = 60.0,
        on_chunk: Callable[[Invocation, Chunk], None] | None = None,
        snap_start: bool = False,
    ) -> None:
        self.function_arn = function_arn
        self.timeout_seconds = timeout_seconds
        self.on_chunk = on_chunk
        self.snap_start = snap_start
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[PostedError] = []
        self.restore_errors: list[PostedError] = []
        self.protocol_errors: list[str] = []
        self.refusals: list[Refusal] = []
        self.next_calls = 0
        self.closed = threading.Event()
        self.init_error_posted = threading.Event()
        self.snapshot_taken = threading.Event()
        """SnapStart: the runtime called `/restore/next` (its init is done)."""
        self.restore_error_posted = threading.Event()
        self.first_next_at: float | None = None
        self.restored_at: float | None = None
        self._restored = threading.Event()
        self._pending: queue.Queue[Invocation] = queue.Queue()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> FakeRuntimeAPI:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        if exc_type is None and self.protocol_errors:
            raise AssertionError(f"the runtime broke the Runtime API protocol: {self.protocol_errors}")

    def close(self) -> None:
        """From now on `/next` (and a held `/restore/next`) answer 500, so the runtime exits."""
        self.closed.set()

    def restore(self) -> None:
        """SnapStart: the snapshot is restored; `/restore/next` answers."""
        self._restored.set()

    def queue(
        self,
        event: dict[str, Any] | bytes,
        *,
        request_id: str | None = None,
        trace_id: str | None = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        client_context: str | None = None,
        cognito_identity: str | None = None,
        cut_after: int | bytes | None = None,
        cut_with_reset: bool = False,
    ) -> Invocation:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        request_id = request_id or str(uuid.uuid4())
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
        }
        if trace_id:
            headers["Lambda-Runtime-Trace-Id"] = trace_id
        if client_context:
            headers["Lambda-Runtime-Client-Context"] = client_context
        if cognito_identity:
            headers["Lambda-Runtime-Cognito-Identity"] = cognito_identity
        invocation = Invocation(request_id, body, headers, cut_after, cut_with_reset)
        self.invocations[request_id] = invocation
        self._pending.put(invocation)
        return invocation

    def wait(self, invocation: Invocation, timeout: float = 60.0) -> Invocation:
        if not invocation.done.wait(timeout):
            raise TimeoutError(f"invocation {invocation.request_id} got no response in {timeout} s")
        return invocation

    def _handler_class(self) -> type[socketserver.BaseRequestHandler]:
        api = self

        class Handler(socketserver.BaseRequestHandler):
            """One connection: requests parsed by h11, answered one after another."""

            def setup(self) -> None:
                self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_HEAD_LIMIT)
                self.sock: socket.socket = self.request

            def handle(self) -> None:
                try:
                    while True:
                        event = self._event()
                        if isinstance(event, h11.ConnectionClosed):
                            return
                        assert isinstance(event, h11.Request), event
                        self._dispatch(event)
                        if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                            return
                        self.conn.start_next_cycle()
                except _ConnectionGone:
                    return
                except h11.RemoteProtocolError as error:
                    api.protocol_errors.append(f"malformed HTTP/1.1 from the runtime: {error}")
                    self._try_reply(400, {"errorMessage": f"malformed request: {error}"})

            # -- reading -------------------------------------------------------------

            def _event(self) -> Any:
                """The next h11 event; `_ConnectionGone` when the runtime closed mid-message."""
                while True:
                    event = self.conn.next_event()
                    if event is not h11.NEED_DATA:
                        return event
                    try:
                        data = self.sock.recv(65536)
                    except OSError as error:
                        raise _ConnectionGone() from error
                    if not data and self.conn.their_state is not h11.IDLE:
                        raise _ConnectionGone()  # closed mid-request: incomplete, not malformed
                    self.conn.receive_data(data)

            def _body(self) -> tuple[bytes, list[tuple[str, str]]]:
                pieces: list[bytes] = []
                while True:
                    event = self._event()
                    if isinstance(event, h11.Data):
                        pieces.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(pieces), _fields(event.headers)

            # -- answering -----------------------------------------------------------

            def _reply(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
                body = b"" if payload is None else json.dumps(payload).encode()
                fields = [*(headers or {}).items(), ("Content-Type", "application/json")]
                fields.append(("Content-Length", str(len(body))))
                out = self.conn.send(h11.Response(status_code=status, headers=fields)) or b""
                out += (self.conn.send(h11.Data(data=body)) or b"") if body else b""
                out += self.conn.send(h11.EndOfMessage()) or b""
                try:
                    self.sock.sendall(out)
                except OSError as error:
                    raise _ConnectionGone() from error

            def _try_reply(self, status: int, payload: Any) -> None:
                try:
                    if self.conn.our_state is h11.SEND_RESPONSE:
                        self._reply(status, payload)
                except (_ConnectionGone, h11.LocalProtocolError):
                    pass

            def _refuse(self, status: int, path: str, reason: str, error_type: str) -> None:
                """Answer at once (the body, if any, is left unread) and close, as Lambda refuses."""
                api.refusals.append(Refusal(status, path, reason))
                self._reply(status, {"errorMessage": reason, "errorType": error_type})
                self._close()

            def _close(self, reset: bool = False) -> None:
                """Drop the connection: closed (FIN), or reset (RST)."""
                if reset:  # SO_LINGER 0: close() sends RST
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.sock.close()
                else:
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_RDWR)
                raise _ConnectionGone()

            # -- routes --------------------------------------------------------------

            def _dispatch(self, request: h11.Request) -> None:
                method = request.method.decode()
                path = request.target.decode("latin-1")
                headers = dict(_fields(request.headers))
                if method == "GET" and path == f"{API}/invocation/next":
                    self._body()
                    self._next()
                elif method == "GET" and path == f"{API}/restore/next" and api.snap_start:
                    self._body()
                    self._restore_next()
                elif method == "POST" and path == f"{API}/init/error":
                    api.init_errors.append(self._posted_error(headers))
                    api.init_error_posted.set()
                    self._reply(202, {"status": "OK"})
                elif method == "POST" and path == f"{API}/restore/error" and api.snap_start:
                    api.restore_errors.append(self._posted_error(headers))
                    api.restore_error_posted.set()
                    self._reply(202, {"status": "OK"})
                elif method == "POST" and path.startswith(f"{API}/invocation/"):
                    self._invocation_post(path, headers, request)
                else:
                    self._body()
                    self._reply(404, {"errorMessage": "not found"})

            def _next(self) -> None:
                api.next_calls += 1
                if api.first_next_at is None:
                    api.first_next_at = time.monotonic()
                if api.snap_start and not api.snapshot_taken.is_set():
                    api.protocol_errors.append("invocation/next before restore/next under SnapStart")
                    self._reply(403, {"errorMessage": "restore/next first", "errorType": "InvalidStateTransition"})
                    return
                while True:
                    if api.closed.is_set():
                        self._reply(500, {"errorMessage": "the fake Runtime API is closed"})
                        return
                    try:
                        invocation = api._pending.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    break
                invocation.taken_at = time.monotonic()
                deadline = int((time.time() + api.timeout_seconds) * 1000)
                headers = {**invocation.headers, "Lambda-Runtime-Deadline-Ms": str(deadline)}
                body = invocation.event
                fields = [*headers.items(), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                out = self.conn.send(h11.Response(status_code=200, headers=fields)) or b""
                out += (self.conn.send(h11.Data(data=body)) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
                try:
                    self.sock.sendall(out)
                except OSError as error:
                    raise _ConnectionGone() from error

            def _restore_next(self) -> None:
                api.snapshot_taken.set()
                while not api._restored.wait(0.05):
                    if api.closed.is_set():
                        self._reply(500, {"errorMessage": "the fake Runtime API is closed"})
                        return
                api.restored_at = time.monotonic()
                self._reply(200)

            def _posted_error(self, headers: dict[str, str]) -> PostedError:
                raw_type = headers.get("lambda-runtime-function-error-type")
                raw, _ = self._body()
                try:
                    value = json.loads(raw) if raw else {}
                except ValueError:
                    value = {"unparsed": raw.decode("latin-1")}
                body = value if isinstance(value, dict) else {"value": value}
                return PostedError(lambda_error_type(raw_type), body, raw_type)

            def _invocation_post(self, path: str, headers: dict[str, str], request: h11.Request) -> None:
                parts = path[len(API) + 1 :].split("/")
                if len(parts) != 3 or parts[2] not in ("response", "error"):
                    self._body()
                    self._reply(404, {"errorMessage": "not found"})
                    return
                invocation = api.invocations.get(parts[1])
                if invocation is None:
                    self._body()
                    self._reply(400, {"errorMessage": "unknown request id"})
                    return
                with api._lock:
                    answered = invocation.response is not None or invocation.error is not None
                    if not answered and parts[2] == "error":
                        invocation.error = PostedError("", {})
                if answered:
                    reason = f"a {parts[2]} for request {invocation.request_id}, which was already answered"
                    self._refuse(403, path, reason, "InvalidStateTransition")
                if parts[2] == "error":
                    invocation.error = self._posted_error(headers)
                    self._reply(202, {"status": "OK"})
                    invocation.done.set()
                else:
                    self._response(invocation, headers, request, path)

            def _response(
                self, invocation: Invocation, headers: dict[str, str], request: h11.Request, path: str
            ) -> None:
                mode = headers.get("lambda-runtime-function-response-mode")
                if mode is not None and mode != "streaming":
                    invocation.done.set()
                    self._refuse(400, path, f"invalid response mode {mode!r}", "InvalidResponseModeHeader")
                head = "".join(f"{name}: {value}\r\n" for name, value in _fields(request.headers))
                response = StreamedResponse(headers=headers, started_at=time.monotonic(), raw_head=head)
                invocation.response = response
                try:
                    self._read_chunks(invocation, response)
                finally:
                    invocation.done.set()
                if response.cut_at is not None:
                    self._close(reset=invocation.cut_with_reset)
                self._reply(202, {"status": "OK"})

            def _read_chunks(self, invocation: Invocation, response: StreamedResponse) -> None:
                """Each HTTP chunk as it arrives (h11 marks where chunks begin and end)."""
                chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
                piece = b""
                while True:
                    event = self._event()
                    if isinstance(event, h11.Data):
                        piece += bytes(event.data)
                        if not (chunked and event.chunk_end):
                            continue  # a buffered body is one piece, recorded at its end
                        chunk = Chunk(time.monotonic(), piece)
                        piece = b""
                        response.chunks.append(chunk)
                        if api.on_chunk is not None:
                            api.on_chunk(invocation, chunk)
                        if _cut_here(invocation.cut_after, response.chunks):
                            response.cut_at = time.monotonic()
                            return
                    elif isinstance(event, h11.EndOfMessage):
                        if piece or not response.chunks:
                            response.chunks.append(Chunk(time.monotonic(), piece))
                        response.trailers = dict(_fields(event.headers))
                        self._check_trailers(response)
                        response.complete = True
                        return

            def _check_trailers(self, response: StreamedResponse) -> None:
                if not response.trailers:
                    return
                response.error_type = lambda_error_type(response.trailers.get("lambda-runtime-function-error-type"))
                encoded = response.trailers.get("lambda-runtime-function-error-body")
                if encoded is not None:
                    try:
                        base64.b64decode(encoded, validate=True)
                    except (binascii.Error, ValueError) as error:
                        api.protocol_errors.append(f"the error-body trailer is not strict base64: {error}")

        return Handler


def _fields(headers: Any) -> list[tuple[str, str]]:
    """h11's (lower-case) header names and values, as text."""
    return [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in headers]
