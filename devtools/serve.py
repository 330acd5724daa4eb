"""`make run`: DynamoDB Local (unless AWS_ENDPOINT_URL_DYNAMODB is set), the table, the API.

Data is kept under `.data/dynamodb` (git ignores it), so sessions survive a restart.
Ctrl-C stops the server and the DynamoDB Local this started.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from devtools.local_dynamodb_env import local_dynamodb


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

    with local_dynamodb(say=lambda message: print(message, flush=True)):
        import uvicorn

        from core.settings import get_settings

        settings = get_settings()
        print(
            f"Threadline on http://{host}:{port}/ (model provider: {settings.model_provider}; "
            f"models: {', '.join(settings.models)}). Ctrl-C stops it.",
            flush=True,
        )
        uvicorn.run("handler.app:app", host=host, port=port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
