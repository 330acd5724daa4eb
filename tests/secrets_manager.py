"""A local Secrets Manager endpoint on 127.0.0.1: moto's Secrets Manager over real HTTP.

moto's own server mode (`moto.server.ThreadedMotoServer`) needs Flask, which is not
installed; this serves the same moto responses through werkzeug (a moto dependency).
Its secrets live in moto's in-process backend, so they survive `stop()` and `start()`
on the same port: a test can make the endpoint unreachable, then bring it back.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from moto.core.request import Request
from moto.secretsmanager.models import secretsmanager_backends
from moto.secretsmanager.responses import SecretsManagerResponse
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Response

from tests.servers import free_port


class LocalSecretsManager:
    """Start with `with`; `stop()`/`start()` take the endpoint down and back up.

    `reads` counts the GetSecretValue calls that reached it; `delay_seconds` slows them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reads = 0
        self.delay_seconds = 0.0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._count = threading.Lock()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.headers.get("X-Amz-Target", "").endswith(".GetSecretValue"):
            with self._count:
                self.reads += 1
            time.sleep(self.delay_seconds)
        status, headers, body = SecretsManagerResponse.dispatch(request, request.url, request.headers)
        return Response(body, status=status, headers=headers)(environ, start_response)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None

    def client(self) -> Any:
        import boto3

        return boto3.client("secretsmanager", endpoint_url=self.url, region_name="us-east-1")

    def __enter__(self) -> LocalSecretsManager:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        secretsmanager_backends.reset()  # moto's backend is process-wide: leave it empty
