"""`make run`: DynamoDB Local (unless AWS_ENDPOINT_URL_DYNAMODB is set), the table, the API.

Data is kept under `.data/dynamodb` (git ignores it; `DYNAMODB_DATA_DIR` moves it),
so sessions survive a restart. Ctrl-C or SIGTERM stops the server and the DynamoDB
Local this started within a few seconds, whatever is in flight: requests get
`SHUTDOWN_GRACE_SECONDS` to finish (DynamoDB Local still runs meanwhile), then
are cancelled; an open stream is cut.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from devtools.local_dynamodb_env import DATA_DIR, local_dynamodb

SHUTDOWN_GRACE_SECONDS = 2
"""How long requests in flight may take to finish after Ctrl-C or SIGTERM. uvicorn
waits for every open connection forever without it (an event stream the client keeps
open, a model that never answers)."""
THREAD_GRACE_SECONDS = 0.5
"""How long the exit waits for worker threads still blocked in a call after the server
stopped (a blocking model call that ignores cancellation) before leaving without them."""


def _data_dir() -> Path:
    configured = os.environ.get("DYNAMODB_DATA_DIR")
    return Path(configured) if configured else DATA_DIR


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    os.environ.setdefault("MODEL_PROVIDER", "echo")
    if os.environ["MODEL_PROVIDER"] == "echo":
        os.environ.setdefault("ECHO_DELAY_MS", "30")  # so a person sees the words arrive
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn re-raises the SIGTERM it caught once it has shut down; make that an
    # orderly exit so DynamoDB Local is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        with local_dynamodb(_data_dir(), say=lambda message: print(message, flush=True)):
            import uvicorn

            from core.settings import get_settings

            settings = get_settings()
            print(
                f"Threadline on http://{host}:{port}/ (model provider: {settings.model_provider}; "
                f"models: {', '.join(settings.models)}). Ctrl-C stops it.",
                flush=True,
            )
            uvicorn.run(
                "handler.app:app",
                host=host,
                port=port,
                log_level="info",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
    except KeyboardInterrupt:
        return 130
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def leave(code: int) -> None:
    """Exit with `code` once the server and DynamoDB Local are down. Python would wait
    at exit for every worker thread still blocked in a call; give them a moment, then
    go without them (the server is gone: nothing they could finish is waited for)."""
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
