"""A local HTTP server, served by a daemon thread for the length of a `with` block: the
lifecycle the fakes (Secrets Manager, Lambda's Invoke API, API Gateway's front) share."""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Self, cast


class ServedInThread:
    """Subclasses build their server and hand it to `_serve` in `__init__`."""

    _server: socketserver.BaseServer

    def _serve(self, server: socketserver.BaseServer) -> None:
        self._server = server
        if isinstance(server, socketserver.ThreadingMixIn):
            server.daemon_threads = True
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = cast(tuple[str, int], self._server.server_address)[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._stopped()

    def _stopped(self) -> None:
        """What a subclass undoes once its server has stopped."""
