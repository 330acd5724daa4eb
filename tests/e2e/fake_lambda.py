"""A fake of Lambda's `Invoke` API on 127.0.0.1, for asynchronous invocations only.

`POST /2015-03-31/functions/<name>/invocations[?Qualifier=...]` with
`X-Amz-Invocation-Type: Event` is answered 202 with an empty body, as Lambda answers
once it has queued the event; the payload is then handed to `deliver` (a test passes
`FakeRuntimeAPI.queue`, so the event arrives at a runtime in another process as
Lambda would deliver it). `copies=2` delivers each event twice, as Lambda may, rarely.

What Lambda refuses, the fake refuses in Lambda's error shape (`X-Amzn-ErrorType`
header, JSON `{"Type", "message"}` body): an unknown function name (404
`ResourceNotFoundException`), and any other invocation type (400; a fake that ran
them synchronously would hide a dispatcher that waits for its job). Every request
is recorded in `invocations`, refused or not.

Point botocore at it with `AWS_ENDPOINT_URL_LAMBDA=<endpoint>` and dummy credentials.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.served import ServedInThread

PATH_PREFIX = "/2015-03-31/functions/"
PATH_SUFFIX = "/invocations"


@dataclass
class AsyncInvocation:
    function_name: str
    qualifier: str | None
    invocation_type: str | None
    payload: bytes
    headers: dict[str, str]
    """Request headers, by lower-case name."""
    status: int
    request_id: str

    def job(self) -> Any:
        return json.loads(self.payload)


class FakeLambda(ServedInThread):
    def __init__(
        self,
        function_name: str,
        deliver: Callable[[bytes], None] | None = None,
        *,
        copies: int = 1,
    ) -> None:
        self.function_name = function_name
        self.deliver = deliver
        self.copies = copies
        self.invocations: list[AsyncInvocation] = []
        self.received = threading.Event()
        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class()))

    @property
    def endpoint(self) -> str:
        return self.origin

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                if not (url.path.startswith(PATH_PREFIX) and url.path.endswith(PATH_SUFFIX)):
                    self._answer(404, "UnknownOperationException", "Unknown operation")
                    return
                name = unquote(url.path[len(PATH_PREFIX) : -len(PATH_SUFFIX)])
                qualifier = (parse_qs(url.query).get("Qualifier") or [None])[0]
                kind = headers.get("x-amz-invocation-type")
                request_id = str(uuid.uuid4())
                if name != fake.function_name:
                    status, error = 404, ("ResourceNotFoundException", f"Function not found: {name}")
                elif kind != "Event":
                    status, error = 400, ("InvalidParameterValueException", "the fake takes InvocationType=Event only")
                else:
                    status, error = 202, None
                fake.invocations.append(AsyncInvocation(name, qualifier, kind, payload, headers, status, request_id))
                if error is not None:
                    self._answer(status, *error)
                    return
                if fake.deliver is not None:
                    for _ in range(fake.copies):
                        fake.deliver(payload)
                self.send_response(202)
                self.send_header("X-Amzn-RequestId", request_id)
                self.send_header("Content-Length", "0")
                self.end_headers()
                fake.received.set()

            def _answer(self, status: int, error_type: str, message: str) -> None:
                body = json.dumps({"Type": "User", "message": message}).encode()
                self.send_response(status)
                self.send_header("X-Amzn-ErrorType", error_type)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
