"""DynamoDB faults for the reliability tests: botocore hooks, and a black hole for real timeouts.

Why hooks (`before-send.dynamodb.<Operation>`) rather than a fault proxy in front of
DynamoDB Local: botocore emits `before-send` once per *attempt*, inside its retry loop,
so a fault injected there goes through exactly the production machinery (the
standard retry mode, its backoff and quota, error parsing, `ClientError` /
`BotoCoreError` classes) while the test keeps per-operation, per-attempt control
and can count the attempts to prove that retries happened. A fault is either an
answer DynamoDB really gives (a 400 `ProvisionedThroughputExceededException` or
`ThrottlingException`, a 500 `InternalServerError`, a 503 `ServiceUnavailable`),
an exception urllib3 really raises (`ReadTimeoutError`, `EndpointConnectionError`),
or the worst case of all, `LOST_RESPONSE`: the request is really sent to DynamoDB
Local and applied, then its answer is lost as in a read timeout. Everything not
faulted passes through to the real DynamoDB Local.

What hooks cannot show is the socket layer itself: that the client's configured
read timeout really bounds a call to a DynamoDB that accepts connections and never
answers. `BlackHole` is that endpoint (a listening socket that reads nothing and
says nothing), for the one test that needs it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError


class _Body:
    """The `raw` of an `AWSResponse`: botocore reads it through `stream()`."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_kwargs: Any) -> Any:
        yield self.data


@dataclass(frozen=True)
class Fault:
    """One failed attempt: what the hook does instead of (or besides) sending."""

    name: str
    act: Callable[[AWSPreparedRequest], AWSResponse | None]

    def __repr__(self) -> str:
        return self.name


def dynamodb_error(status: int, code: str, message: str = "injected fault") -> Fault:
    """An error answer exactly as DynamoDB's JSON protocol sends it."""
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()

    def act(request: AWSPreparedRequest) -> AWSResponse:
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "injected-fault"}
        return AWSResponse(request.url, status, headers, _Body(body))

    return Fault(f"{status}-{code}", act)


def _raise_read_timeout(request: AWSPreparedRequest) -> AWSResponse | None:
    raise ReadTimeoutError(endpoint_url=request.url)


def _raise_connection_error(request: AWSPreparedRequest) -> AWSResponse | None:
    raise EndpointConnectionError(endpoint_url=request.url)


def _send_then_lose(request: AWSPreparedRequest) -> AWSResponse | None:
    """Send the request for real (DynamoDB applies it), then lose the answer."""
    url = urlsplit(request.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        connection.request(request.method or "POST", url.path or "/", body=request.body, headers=dict(request.headers))
        connection.getresponse().read()
    finally:
        connection.close()
    raise ReadTimeoutError(endpoint_url=request.url)


THROTTLED = dynamodb_error(
    400,
    "ProvisionedThroughputExceededException",
    "The level of configured provisioned throughput for the table was exceeded.",
)
THROTTLING = dynamodb_error(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
INTERNAL = dynamodb_error(500, "InternalServerError", "Internal server error")
UNAVAILABLE = dynamodb_error(503, "ServiceUnavailable", "Service unavailable")
READ_TIMEOUT = Fault("read-timeout", _raise_read_timeout)
CONNECTION_REFUSED = Fault("connection-error", _raise_connection_error)
LOST_RESPONSE = Fault("applied-then-response-lost", _send_then_lose)


class DynamoDBFaults:
    """Scripted faults on one botocore DynamoDB client, by operation and attempt.

    `fail(op, *faults)` makes the next attempts of `op` fail in that order (then they
    pass again); `always(op, fault)` makes every attempt fail until `clear(op)`.
    `attempts[op]` counts every attempt (failed or passed through) since the start.
    Use as a context manager: the hook is removed on exit, whatever happens.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.attempts: Counter[str] = Counter()
        self._scripts: dict[str, deque[Fault]] = {}
        self._always: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._unique_id = f"reliability-faults-{id(self)}"

    def fail(self, operation: str, *faults: Fault) -> DynamoDBFaults:
        with self._lock:
            self._scripts.setdefault(operation, deque()).extend(faults)
        return self

    def always(self, operation: str, fault: Fault) -> DynamoDBFaults:
        with self._lock:
            self._always[operation] = fault
        return self

    def clear(self, operation: str | None = None) -> None:
        with self._lock:
            for table in (self._scripts, self._always):
                if operation is None:
                    table.clear()
                else:
                    table.pop(operation, None)

    def _before_send(self, request: AWSPreparedRequest, event_name: str, **_kwargs: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.attempts[operation] += 1
            script = self._scripts.get(operation)
            fault = script.popleft() if script else self._always.get(operation)
        return fault.act(request) if fault is not None else None

    def __enter__(self) -> DynamoDBFaults:
        self.client.meta.events.register("before-send.dynamodb", self._before_send, unique_id=self._unique_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.meta.events.unregister("before-send.dynamodb", unique_id=self._unique_id)


class BlackHole:
    """A TCP endpoint on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)  # held open, never read, never answered

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self.connections:
            connection.close()
