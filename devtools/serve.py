"""`make run`: DynamoDB Local (unless AWS_ENDPOINT_URL_DYNAMODB is set), the table, the API.

Data is kept under `.data/dynamodb` (git ignores it), so sessions survive a restart.
Ctrl-C stops the server and the DynamoDB Local this started.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    from devtools.dynamodb_local import DynamoDBLocal, dummy_aws_environment

    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    os.environ.setdefault("MODEL_PROVIDER", "echo")
    if os.environ["MODEL_PROVIDER"] == "echo":
        os.environ.setdefault("ECHO_DELAY_MS", "30")  # so a person sees the words arrive
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # uvicorn re-raises the SIGTERM it caught once it has shut down; make that an
    # orderly exit so the `finally` below stops DynamoDB Local.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    database: DynamoDBLocal | None = None
    if not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        data_dir = ROOT / ".data" / "dynamodb"
        database = DynamoDBLocal(data_dir=data_dir).start()
        for name, value in dummy_aws_environment(database.endpoint).items():
            os.environ.setdefault(name, value)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = database.endpoint
        print(f"DynamoDB Local on {database.endpoint}, data in {data_dir.relative_to(ROOT)}/", flush=True)
    else:
        print(f"Using DynamoDB at {os.environ['AWS_ENDPOINT_URL_DYNAMODB']}", flush=True)
    try:
        import uvicorn

        from core.settings import get_settings
        from core.store.client import get_dynamodb_client
        from core.store.dynamodb import ensure_table

        settings = get_settings()
        ensure_table(get_dynamodb_client(), settings.sessions_table)
        if not settings.api_keys:
            print("WARNING: API_KEYS is empty: the API is open to anyone who can reach it.", flush=True)
        print(
            f"Threadline on http://{host}:{port}/ (model provider: {settings.model_provider}; "
            f"models: {', '.join(settings.models)}). Ctrl-C stops it.",
            flush=True,
        )
        uvicorn.run("handler.app:app", host=host, port=port, log_level="info")
    finally:
        if database is not None:
            database.stop()
            print("DynamoDB Local stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
