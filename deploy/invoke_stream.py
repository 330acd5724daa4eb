"""`make invoke-stream EVENT=events/<name>.json`: one event through the streaming runtime.

    python deploy/invoke_stream.py events/rest-stream.json

Starts a local Lambda Runtime API on 127.0.0.1 (the fake the e2e tests use), then the
streaming runtime exactly as Lambda starts it (`src/handler/streaming/exec-wrapper`
with this Python, `AWS_LAMBDA_RUNTIME_API` pointing at the local endpoint), hands it
the event, and prints every HTTP chunk of the streamed response the moment it
arrives, with its time since the runtime took the event: first the prelude
(`statusCode`, `headers`, `cookies`), then each body chunk, then the trailers if the
stream failed. The runtime's own log lines go to stderr.

The app runs with the echo model (unless MODEL_PROVIDER is set), one word every
ECHO_DELAY_MS (default 80 ms) so the chunks' timing shows, against DynamoDB Local
with its data under `.data/dynamodb` (as `make run`), or the endpoint in
AWS_ENDPOINT_URL_DYNAMODB. As inside Lambda, the app requires an API key: unless
API_KEYS is set, a throwaway key is made and, if the event has no Authorization
header, added to the event (said on stderr).

Exit status: 0 when a response was streamed (whatever its status), 1 when the runtime
reported an error (to /error or /init/error) or stopped, 2 when the event file is
unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.e2e.fake_runtime_api import Chunk, FakeRuntimeAPI, Invocation  # noqa: E402

WRAPPER = ROOT / "src" / "handler" / "streaming" / "exec-wrapper"
DATA_DIR = ROOT / ".data" / "dynamodb"
TIMEOUT_SECONDS = 900.0
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "threadline-local",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/threadline-local",
    "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]invoke-stream",
}


def load_event(path: Path) -> dict[str, Any]:
    if not path.is_file():
        samples = ", ".join(sorted(p.name for p in (ROOT / "events").glob("*.json")))
        raise ValueError(f"event file not found: {path}" + (f" (samples in events/: {samples})" if samples else ""))
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as JSON: {error}") from None
    if not isinstance(event, dict):
        raise ValueError(f"{path} is not a JSON object")
    return event


def has_authorization(event: dict[str, Any]) -> bool:
    names = {str(name).lower() for name in (event.get("headers") or {})}
    names |= {str(name).lower() for name in (event.get("multiValueHeaders") or {})}
    return "authorization" in names


def add_authorization(event: dict[str, Any], key: str) -> None:
    value = f"Bearer {key}"
    if event.get("version") == "2.0":
        event.setdefault("headers", {})["authorization"] = value
        return
    event["headers"] = {**(event.get("headers") or {}), "Authorization": value}
    if event.get("multiValueHeaders") is not None:
        event["multiValueHeaders"]["Authorization"] = [value]


def _say(message: str) -> None:
    print(f"invoke-stream: {message}", file=sys.stderr, flush=True)


class Printer:
    """Prints each chunk as the local Runtime API receives it."""

    def __init__(self) -> None:
        self.count = 0
        self.seen = b""
        self.prelude_done = False
        self.lock = threading.Lock()

    def __call__(self, invocation: Invocation, chunk: Chunk) -> None:
        with self.lock:
            self.count += 1
            since = (chunk.at - (invocation.taken_at or chunk.at)) * 1000
            if not self.prelude_done:
                self.seen += chunk.data
                prelude, delimiter, rest = self.seen.partition(b"\x00" * 8)
                if not delimiter:
                    print(f"{since:9.1f} ms  chunk {self.count:3d}  {len(chunk.data):6d} B  (prelude, partial)")
                    return
                self.prelude_done = True
                print(f"{since:9.1f} ms  chunk {self.count:3d}  {len(chunk.data):6d} B  prelude + 8 NUL delimiter:")
                print(f"{'':14}{json.dumps(json.loads(prelude))}")
                if rest:
                    print(f"{'':14}then {rest[:200]!r}")
            else:
                print(f"{since:9.1f} ms  chunk {self.count:3d}  {len(chunk.data):6d} B  {describe_chunk(chunk.data)}")
            sys.stdout.flush()


def describe_chunk(data: bytes) -> str:
    """A chat completion SSE frame by what it carries; anything else as text."""
    text = data.decode("utf-8", errors="replace")
    if text.startswith("data: {") and text.count("\n\n") == 1:
        try:
            frame = json.loads(text[len("data: ") :])
        except ValueError:
            frame = None
        if isinstance(frame, dict) and isinstance(frame.get("choices"), list):
            parts = []
            for choice in frame["choices"]:
                delta = {k: v for k, v in (choice.get("delta") or {}).items() if v not in (None, "")}
                parts.append(f"delta {json.dumps(delta, ensure_ascii=False)}" if delta else "delta {}")
                if choice.get("finish_reason"):
                    parts.append(f"finish_reason {choice['finish_reason']}")
            if frame.get("usage"):
                parts.append(f"usage {json.dumps(frame['usage'])}")
            return "SSE " + ", ".join(parts)
    shown = text if len(text) <= 160 else text[:157] + "..."
    return repr(shown)


def run(event: dict[str, Any], source: Path) -> int:
    from devtools.dynamodb_local import DynamoDBLocal, dummy_aws_environment

    env = dict(os.environ)
    env.setdefault("MODEL_PROVIDER", "echo")
    env.setdefault("ECHO_DELAY_MS", "80")
    if not env.get("API_KEYS") and not env.get("API_KEYS_SECRET_ARN"):
        env["API_KEYS"] = f"local-{secrets.token_urlsafe(18)}"
        if not has_authorization(event):
            add_authorization(event, env["API_KEYS"])
            _say("the event had no Authorization header: added one with a throwaway API key")

    database: DynamoDBLocal | None = None
    try:
        endpoint = env.get("AWS_ENDPOINT_URL_DYNAMODB")
        if not endpoint:
            database = DynamoDBLocal(data_dir=DATA_DIR)
            database.start()
            endpoint = database.endpoint
            _say(f"DynamoDB Local on {endpoint}, data in {DATA_DIR.relative_to(ROOT)}/")
        for name, value in dummy_aws_environment(endpoint).items():
            env.setdefault(name, value)
        env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        table = env.get("SESSIONS_TABLE") or "threadline-sessions"
        env["SESSIONS_TABLE"] = table
        _ensure_table(env, table)

        printer = Printer()
        with FakeRuntimeAPI(timeout_seconds=TIMEOUT_SECONDS, on_chunk=printer) as api:
            env.update(LAMBDA_ENV)
            env["AWS_LAMBDA_RUNTIME_API"] = api.address
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
            env.pop("LAMBDA_TASK_ROOT", None)
            command = [str(WRAPPER), sys.executable, "/var/runtime/bootstrap.py"]
            _say(f"runtime: {' '.join(command)} (Runtime API at {api.address}); event {source}")
            started = time.monotonic()
            process = subprocess.Popen(command, env=env, stdout=sys.stderr, stderr=sys.stderr)  # noqa: S603
            try:
                invocation = api.queue(event)
                status = _wait(api, invocation, process)
                if status is None:
                    return 1
                _summary(invocation, started)
                return 0 if invocation.response is not None else 1
            finally:
                api.close()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
    finally:
        if database is not None:
            database.stop()
            _say("DynamoDB Local stopped.")


def _ensure_table(env: dict[str, str], table: str) -> None:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from core.store.client import get_dynamodb_client
        from core.store.dynamodb import ensure_table

        get_dynamodb_client.cache_clear()
        ensure_table(get_dynamodb_client(), table)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait(api: FakeRuntimeAPI, invocation: Invocation, process: subprocess.Popen[bytes]) -> bool | None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if invocation.done.wait(0.05):
            return True
        if api.init_error_posted.is_set():
            error = api.init_errors[0]
            print(f"init error ({error.error_type_header}): {json.dumps(error.body, indent=2)}")
            return None
        if process.poll() is not None:
            print(f"the runtime exited ({process.returncode}) before answering")
            return None
    print(f"no answer in {TIMEOUT_SECONDS:.0f} s")
    return None


def _summary(invocation: Invocation, started: float) -> None:
    if invocation.error is not None:
        print(f"== reported to /error ({invocation.error.error_type_header}):")
        print(json.dumps(invocation.error.body, indent=2))
        return
    response = invocation.response
    assert response is not None
    taken = invocation.taken_at or started
    body_chunks = response.chunks
    first = (body_chunks[0].at - taken) * 1000 if body_chunks else 0.0
    last = (body_chunks[-1].at - taken) * 1000 if body_chunks else 0.0
    prelude, payload = response.split()
    print(
        f"== status {prelude.get('statusCode')}: {len(body_chunks)} chunks, {len(payload)} body bytes; "
        f"first chunk at {first:.1f} ms, last at {last:.1f} ms after the runtime took the event "
        f"({(taken - started) * 1000:.0f} ms after the runtime started: its init)"
    )
    session = (prelude.get("headers") or {}).get("x-hermes-session-id")
    if session:
        print(f"== X-Hermes-Session-Id: {session}  (send it back to continue this session)")
    if response.trailers:
        print(f"== error trailers: {json.dumps(response.trailers)}")
        detail = response.error_trailer()
        if detail is not None:
            print(f"   decoded: {json.dumps(detail)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stream one Lambda event through the streaming runtime.")
    parser.add_argument("event", type=Path, help="a Lambda event JSON file, e.g. events/rest-stream.json")
    args = parser.parse_args(argv)
    try:
        event = load_event(args.event)
    except ValueError as error:
        print(f"invoke-stream: {error}", file=sys.stderr)
        return 2
    try:
        return run(event, args.event)
    except KeyboardInterrupt:
        print("invoke-stream: interrupted.", file=sys.stderr)
        return 130
    except RuntimeError as error:  # DynamoDB Local could not start
        print(f"invoke-stream: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
