"""A fake Lambda Runtime API on 127.0.0.1 that records what a runtime sends, byte for byte.

It serves the four endpoints a runtime uses (`/2018-06-01/runtime/invocation/next`,
`.../{id}/response`, `.../{id}/error`, `/2018-06-01/runtime/init/error`), queues the
events a test gives it, and records each response: the request headers, every HTTP
chunk of a chunked body with the time it arrived (`time.monotonic()`), and the
trailers. The chunked body is parsed here, independently of the runtime's encoder,
so a framing mistake shows up as a test failure.

`queue(event, cut_after=N)` plays Lambda dropping a streamed response whose client
went away: once N chunks of the body have arrived (the prelude's chunk counts), or
with `cut_after=b"..."` once a chunk holding those bytes has arrived, the fake closes the connection without answering (`cut_with_reset=True`: it resets it,
so the runtime's next write fails with ECONNRESET). `StreamedResponse.cut_at` says
when.

`close()` makes `/next` answer 500 ("container error, runtime should exit"), so a
runtime under test stops by itself. Used by the e2e tests and by
`make invoke-stream` (`deploy/invoke_stream.py`), which prints chunks as they come
(`on_chunk`).
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

DELIMITER = b"\x00" * 8
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:threadline-test"


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
        return json.loads(base64.b64decode(encoded)) if encoded else None


@dataclass
class PostedError:
    error_type_header: str | None
    body: dict[str, Any]


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime stopped while it waited on `/next` is not an error of the fake's."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeRuntimeAPI:
    def __init__(
        self,
        *,
        function_arn: str = FUNCTION_ARN,
        timeout_seconds: float = 60.0,
        on_chunk: Callable[[Invocation, Chunk], None] | None = None,
    ) -> None:
        self.function_arn = function_arn
        self.timeout_seconds = timeout_seconds
        self.on_chunk = on_chunk
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[PostedError] = []
        self.next_calls = 0
        self.closed = threading.Event()
        self.init_error_posted = threading.Event()
        self._pending: queue.Queue[Invocation] = queue.Queue()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

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

    def close(self) -> None:
        """From now on `/next` answers 500, so the runtime exits."""
        self.closed.set()

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:
                if self.path != "/2018-06-01/runtime/invocation/next":
                    self._reply(404, b'{"errorMessage":"not found"}')
                    return
                api.next_calls += 1
                while True:
                    if api.closed.is_set():
                        self._reply(500, b'{"errorMessage":"the fake Runtime API is closed"}')
                        return
                    try:
                        invocation = api._pending.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    break
                invocation.taken_at = time.monotonic()
                deadline = int((time.time() + api.timeout_seconds) * 1000)
                headers = {**invocation.headers, "Lambda-Runtime-Deadline-Ms": str(deadline)}
                self._reply(200, invocation.event, headers)

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                headers = {name.lower(): value for name, value in self.headers.items()}
                if parts[:3] == ["2018-06-01", "runtime", "init"] and parts[3:] == ["error"]:
                    api.init_errors.append(PostedError(headers.get("lambda-runtime-function-error-type"), self._json()))
                    api.init_error_posted.set()
                    self._reply(202, b'{"status":"OK"}')
                    return
                if parts[:3] != ["2018-06-01", "runtime", "invocation"] or len(parts) != 5:
                    self._reply(404, b'{"errorMessage":"not found"}')
                    return
                invocation = api.invocations.get(parts[3])
                if invocation is None:
                    self._reply(400, b'{"errorMessage":"unknown request id"}')
                    return
                if parts[4] == "error":
                    invocation.error = PostedError(headers.get("lambda-runtime-function-error-type"), self._json())
                    self._reply(202, b'{"status":"OK"}')
                    invocation.done.set()
                elif parts[4] == "response":
                    self._response(invocation, headers)
                else:
                    self._reply(404, b'{"errorMessage":"not found"}')

            def _json(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    value = json.loads(raw) if raw else {}
                except ValueError:
                    value = {"unparsed": raw.decode("latin-1")}
                return value if isinstance(value, dict) else {"value": value}

            def _response(self, invocation: Invocation, headers: dict[str, str]) -> None:
                response = StreamedResponse(headers=headers, started_at=time.monotonic(), raw_head=str(self.headers))
                invocation.response = response
                if "chunked" not in headers.get("transfer-encoding", ""):
                    length = int(headers.get("content-length") or 0)
                    response.chunks.append(Chunk(time.monotonic(), self.rfile.read(length)))
                    response.complete = True
                else:
                    self._read_chunks(invocation, response)
                if response.cut_at is not None:
                    self._cut(invocation.cut_with_reset)
                else:
                    self._reply(202, b'{"status":"OK"}')
                invocation.done.set()

            def _cut(self, reset: bool) -> None:
                """Drop the connection without an answer: closed (FIN) or reset (RST)."""
                self.close_connection = True
                if reset:  # SO_LINGER 0: close() sends RST
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _read_chunks(self, invocation: Invocation, response: StreamedResponse) -> None:
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return  # the runtime closed the connection mid-body: incomplete
                    if not line.endswith(b"\r\n"):
                        raise AssertionError(f"chunk size line without CRLF: {line!r}")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        break
                    data = self.rfile.read(size)
                    if self.rfile.read(2) != b"\r\n":
                        raise AssertionError("chunk data not followed by CRLF")
                    chunk = Chunk(time.monotonic(), data)
                    response.chunks.append(chunk)
                    if api.on_chunk is not None:
                        api.on_chunk(invocation, chunk)
                    if _cut_here(invocation.cut_after, response.chunks):
                        response.cut_at = time.monotonic()
                        return
                while True:
                    line = self.rfile.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    response.trailers[name.strip().lower()] = value.strip()
                response.complete = True

        return Handler
