"""An HTTP front for the fake Runtime API: API Gateway's REST API with response streaming, in small.

    with FakeRuntimeAPI() as api, ApiGatewayFront(api) as front, RuntimeProcess(api.address, ...):
        httpx.get(front.url + "/v1/models", ...)     # front.url ends with the stage, /prod

Each HTTP request becomes an API Gateway REST proxy event (`tests.e2e.events.rest_event`,
the stage taken off the path) queued on the fake Runtime API; the streaming runtime's
response comes back as API Gateway streams it: nothing until the prelude and its 8-NUL
delimiter have arrived, then the prelude's status, headers and cookies, then every body
chunk the moment the runtime sends it (chunked transfer encoding). What API Gateway does
on failure is played too: an error posted before the first byte (or a response without
a prelude) becomes `502 {"message": "Internal server error"}`; an error after it (the
trailers) ends the stream without its terminating chunk, so a client sees it cut short.

Why: `deploy/smoke.py` checks a deployment over HTTP; this lets its own tests run it
against the streaming runtime exactly as deployed, minus AWS.
"""

from __future__ import annotations

import json
import queue
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.e2e.events import rest_event
from tests.e2e.fake_runtime_api import DELIMITER, Chunk, FakeRuntimeAPI, Invocation
from tests.fakes.served import ServedInThread

STAGE = "prod"
BAD_GATEWAY = b'{"message": "Internal server error"}'
NO_BODY_STATUSES = frozenset({204, 304})


class ApiGatewayFront(ServedInThread):
    def __init__(self, api: FakeRuntimeAPI, *, stage: str = STAGE, timeout_seconds: float = 60.0) -> None:
        self.api = api
        self.stage = stage
        self.timeout_seconds = timeout_seconds
        self._streams: dict[str, queue.Queue[bytes]] = {}
        self._previous = api.on_chunk
        api.on_chunk = self._on_chunk
        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class()))

    @property
    def url(self) -> str:
        """The invoke URL, as the stack's `ApiUrl` output gives it: the stage included."""
        return f"{self.origin}/{self.stage}"

    def _stopped(self) -> None:
        self.api.on_chunk = self._previous

    def _on_chunk(self, invocation: Invocation, chunk: Chunk) -> None:
        stream = self._streams.get(invocation.request_id)
        if stream is not None:
            stream.put(chunk.data)
        if self._previous is not None:
            self._previous(invocation, chunk)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _any(self) -> None:
                self.close_connection = True
                url = urlsplit(self.path)
                prefix = f"/{front.stage}"
                if not (url.path == prefix or url.path.startswith(prefix + "/")):
                    self._send(403, b'{"message": "Forbidden"}')  # API Gateway: no such stage
                    return
                path = url.path[len(prefix) :] or "/"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else None
                headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
                event = rest_event(
                    self.command,
                    path,
                    body,
                    headers=headers,
                    query=dict(parse_qsl(url.query)) or None,
                    stage=front.stage,
                )
                request_id = str(uuid.uuid4())
                stream: queue.Queue[bytes] = queue.Queue()
                front._streams[request_id] = stream
                try:
                    invocation = front.api.queue(event, request_id=request_id)
                    self._relay(invocation, stream)
                finally:
                    front._streams.pop(request_id, None)

            do_GET = do_POST = do_DELETE = do_OPTIONS = do_PUT = do_PATCH = _any

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _relay(self, invocation: Invocation, stream: queue.Queue[bytes]) -> None:
                buffered = b""
                started = False
                status = 0
                while True:
                    try:
                        data = stream.get(timeout=0.02)
                    except queue.Empty:
                        if invocation.done.is_set() and stream.empty():
                            break
                        continue
                    if started:
                        self._chunk(data, status)
                        continue
                    buffered += data
                    if DELIMITER not in buffered:
                        continue
                    prelude, _, rest = buffered.partition(DELIMITER)
                    status = self._start(json.loads(prelude))
                    started = True
                    if rest:
                        self._chunk(rest, status)
                if not started:
                    self._send(502, BAD_GATEWAY)  # an error, or no prelude: API Gateway's 502
                    return
                response = invocation.response
                failed = response is not None and response.error_trailer() is not None
                if status not in NO_BODY_STATUSES and not failed:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _start(self, prelude: dict[str, Any]) -> int:
                status = int(prelude.get("statusCode", 200))
                self.send_response(status)
                for name, value in (prelude.get("headers") or {}).items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, str(value))
                for cookie in prelude.get("cookies") or []:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Connection", "close")
                if status not in NO_BODY_STATUSES:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                return status

            def _chunk(self, data: bytes, status: int) -> None:
                if data and status not in NO_BODY_STATUSES:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

        return Handler
