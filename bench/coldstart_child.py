"""One cold start: run as a fresh process by `bench.coldstart`, never imported by it.

    python coldstart_child.py SCENARIO EVENT_JSON

Runs on the bare interpreter with `PYTHONPATH` set to a copy of the function's code
and dependencies (standard library and that copy only). It imports what the scenario
needs, serves the event through a Mangum handler as Lambda's Python runtime would
(handler(event, context)), and prints one line, `BENCH-RESULT {json}`, with the status
and how many modules of Powertools and openai the process imported. The parent times
the process from its start to that line.

Scenarios:
- `ours`:  `handler.lambda_buffered.handler`, the function's buffered Lambda entry;
- `bare`:  a bare FastAPI app with one JSON route behind Mangum (the baseline);
- `floor`: the bare app plus a botocore DynamoDB client (created as Threadline creates
           it) and one PutItem: the least a stateful turn on DynamoDB can cost.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

STARTED = time.perf_counter()


class Context:
    """The few attributes of Lambda's context object that Mangum and the app read."""

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "threadline-bench"
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:threadline-bench"
        self.memory_limit_in_mb = 1024
        self.log_group_name = "/aws/lambda/threadline-bench"
        self.log_stream_name = "2026/11/25/[$LATEST]0123456789abcdef"
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def bare_handler() -> Any:
    """Both scenarios' app: `bare` calls /ping, `floor` calls /put (botocore is imported there)."""
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        return {"ok": True, "at": time.time()}

    @app.post("/put")
    def put() -> dict[str, Any]:
        import botocore.session
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 3, "mode": "standard"})
        client = botocore.session.get_session().create_client("dynamodb", config=config)
        client.put_item(
            TableName=os.environ["SESSIONS_TABLE"],
            Item={"pk": {"S": f"FLOOR#{uuid.uuid4()}"}, "sk": {"S": "SESSION"}, "at": {"N": str(time.time())}},
        )
        return {"ok": True}

    return Mangum(app, lifespan="off")


def main() -> None:
    scenario, event_path = sys.argv[1], sys.argv[2]
    with open(event_path, encoding="utf-8") as file:
        event = json.load(file)
    if scenario == "ours":
        from handler.lambda_buffered import handler
    elif scenario in ("bare", "floor"):
        handler = bare_handler()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    imported = time.perf_counter()
    response = handler(event, Context())
    served = time.perf_counter()
    result = {
        "import_ms": round((imported - STARTED) * 1000, 1),
        "request_ms": round((served - imported) * 1000, 1),
        "status": response["statusCode"],
        "powertools_modules": sum(name.startswith("aws_lambda_powertools") for name in sys.modules),
        "openai_modules": sum(name == "openai" or name.startswith("openai.") for name in sys.modules),
        "modules": len(sys.modules),
    }
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
