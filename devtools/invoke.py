"""`make invoke EVENT=events/<name>.json`: run the buffered Lambda handler on a sample event.

    python -m devtools.invoke events/rest-chat.json

Like `make run`, this uses DynamoDB Local with its data under `.data/dynamodb` (or the
endpoint in AWS_ENDPOINT_URL_DYNAMODB, starting nothing) and creates the table where
missing. It then calls `handler.lambda_buffered.handler` in this process, as the Lambda
runtime would, with a fake context (a 30 s deadline), and prints the Lambda response
as JSON followed by its decoded body (an SSE body frame by frame) and the session id.

Log lines (START/END/REPORT, the app's logs) go to stderr, the response to stdout.
Exit status: 0 when the handler returned a response (whatever its statusCode), 1 when
it raised or DynamoDB Local could not start, 2 when the event file is missing or not a
JSON object, 130 on Ctrl-C. The DynamoDB Local this starts is always stopped.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mangum.types import LambdaContext

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

FUNCTION_NAME = "threadline"
ACCOUNT_ID = "123456789012"
TIMEOUT_SECONDS = 30.0
MEMORY_MB = 1024
SESSION_HEADER = "x-hermes-session-id"


class EventFileError(Exception):
    """The event file cannot be used (missing, unreadable, not a JSON object)."""


class FakeLambdaContext:
    """The `context` the Lambda Python runtime passes, for one invocation that must end
    within `timeout_seconds` of the object's creation."""

    def __init__(
        self,
        *,
        function_name: str = FUNCTION_NAME,
        timeout_seconds: float = TIMEOUT_SECONDS,
        memory_mb: int = MEMORY_MB,
        region: str | None = None,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.aws_request_id: str = str(uuid.uuid4())
        self.function_name: str = function_name
        self.function_version: str = "$LATEST"
        self.invoked_function_arn: str = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        # The runtime reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE: a string.
        self.memory_limit_in_mb: str = str(memory_mb)
        self.log_group_name: str = f"/aws/lambda/{function_name}"
        self.log_stream_name: str = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.timeout_seconds = timeout_seconds
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_event(path: Path) -> dict[str, Any]:
    if not path.is_file():
        samples = sorted(p.name for p in (ROOT / "events").glob("*.json"))
        hint = f" Samples in events/: {', '.join(samples)}." if samples else ""
        raise EventFileError(f"event file not found: {path}.{hint}")
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise EventFileError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise EventFileError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(event, dict):
        raise EventFileError(f"{path} holds JSON but not an object: a Lambda HTTP event is a JSON object.")
    return event


def describe(event: dict[str, Any]) -> str:
    """Which AWS service would send this event, and the request it carries."""
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        http = context.get("http") or {}
        is_url = ".lambda-url." in str(context.get("domainName", ""))
        source = "Lambda Function URL" if is_url else "API Gateway HTTP API"
        return f"{source} (payload 2.0): {http.get('method', '?')} {event.get('rawPath', '?')}"
    if "elb" in context:
        return f"Application Load Balancer: {event.get('httpMethod', '?')} {event.get('path', '?')}"
    if "resource" in event:
        request = f"{event.get('httpMethod', '?')} {event.get('path', '?')}"
        return f"API Gateway REST API (payload 1.0, stage {context.get('stage', '?')}): {request}"
    return "an event of unknown shape"


def response_headers(response: dict[str, Any]) -> dict[str, list[str]]:
    """Every response header by lower-case name, from `headers` and `multiValueHeaders`."""
    merged: dict[str, list[str]] = {}
    for name, value in (response.get("headers") or {}).items():
        merged.setdefault(name.lower(), []).append(str(value))
    for name, values in (response.get("multiValueHeaders") or {}).items():
        merged.setdefault(name.lower(), []).extend(str(value) for value in values)
    return merged


def decoded_body(response: dict[str, Any]) -> str:
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        return base64.b64decode(body).decode("utf-8", errors="replace")
    return str(body)


def sse_frames(text: str) -> list[str]:
    """The frames of an SSE body: the blocks between blank lines."""
    return [frame.strip("\n") for frame in text.replace("\r\n", "\n").split("\n\n") if frame.strip()]


def render(response: dict[str, Any]) -> str:
    """The response as Lambda returns it, then its body decoded, for a person to read."""
    headers = response_headers(response)
    content_type = next(iter(headers.get("content-type", [])), "")
    body = decoded_body(response)
    lines = [f"== Lambda response: statusCode {response.get('statusCode')} ==", json.dumps(response, indent=2)]
    if "text/event-stream" in content_type:
        frames = sse_frames(body)
        lines += ["", f"== Body: {content_type}, {len(frames)} SSE frames (buffered by Mangum) ==", *frames]
    elif body:
        try:
            pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = body
        lines += ["", f"== Body: {content_type or 'no content-type'} ==", pretty]
    else:
        lines += ["", "== No body =="]
    session = headers.get(SESSION_HEADER)
    if session:
        lines += ["", f"X-Hermes-Session-Id: {session[0]}  (send it back to continue this session)"]
    return "\n".join(lines)


def _invocation_error(error: BaseException, context: FakeLambdaContext) -> str:
    """The error as Lambda reports a function that raised."""
    return json.dumps(
        {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": context.aws_request_id,
            "stackTrace": traceback.format_tb(error.__traceback__),
        },
        indent=2,
    )


def invoke(event: dict[str, Any], source: Path) -> int:
    """Run the handler on the event against the local DynamoDB; print what it returned."""
    from devtools.local_dynamodb_env import local_dynamodb

    log = logging.getLogger("devtools.invoke")
    output: str | None = None
    with local_dynamodb() as database:
        log.info("Table %s; invoking handler.lambda_buffered.handler with %s", database.table, source)
        log.info("%s", describe(event))
        from handler.lambda_buffered import handler

        context = FakeLambdaContext()
        print(f"START RequestId: {context.aws_request_id} Version: {context.function_version}", file=sys.stderr)
        started = time.perf_counter()
        try:
            # Mangum types memory_limit_in_mb as an int; the real runtime passes a string.
            response = handler(event, cast("LambdaContext", context))
        except Exception as error:
            print(_invocation_error(error, context), file=sys.stderr)
            log.error("The handler raised %s: Lambda would report an invocation error.", type(error).__name__)
            return 1
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            print(f"END RequestId: {context.aws_request_id}", file=sys.stderr)
            print(
                f"REPORT RequestId: {context.aws_request_id}\tDuration: {elapsed_ms:.2f} ms\t"
                f"Billed Duration: {math.ceil(elapsed_ms)} ms\tMemory Size: {context.memory_limit_in_mb} MB\t"
                f"Remaining: {context.get_remaining_time_in_millis()} ms",
                file=sys.stderr,
                flush=True,
            )
        if elapsed_ms > context.timeout_seconds * 1000:
            log.warning("This took longer than the %.0f s timeout: Lambda would have stopped it.", TIMEOUT_SECONDS)
        output = render(response)
    print(output, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.invoke",
        description="Run the buffered Lambda handler in-process on a sample event, against DynamoDB Local.",
    )
    parser.add_argument("event", type=Path, help="a Lambda event JSON file, e.g. events/rest-chat.json")
    args = parser.parse_args(argv)
    try:
        event = load_event(args.event)
    except EventFileError as error:
        print(f"invoke: {error}", file=sys.stderr)
        return 2

    os.environ.setdefault("MODEL_PROVIDER", "echo")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # An orderly exit on SIGTERM too, so DynamoDB Local is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return invoke(event, args.event)
    except KeyboardInterrupt:
        print("invoke: interrupted.", file=sys.stderr)
        return 130
    except RuntimeError as error:  # DynamoDB Local could not start
        print(f"invoke: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
