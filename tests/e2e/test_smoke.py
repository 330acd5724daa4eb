"""`deploy/smoke.py` (`make smoke`), run as a user runs it after `sam deploy`, against a
real uvicorn server on DynamoDB Local (`make run`'s shape) and against the streaming
runtime driven by the fake Runtime API behind an API Gateway-like HTTP front. It must
pass on both, and fail, saying why, on a deployment that buffers its streams or on a
wrong key.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.e2e.api_gateway_front import ApiGatewayFront
from tests.e2e.fake_runtime_api import FakeRuntimeAPI
from tests.e2e.runtime_process import RuntimeProcess
from tests.servers import LiveServer

ROOT = Path(__file__).resolve().parents[2]
KEY = "smoke-test-key"
ORIGIN = "https://app.example.com"
WORD_DELAY_SECONDS = 0.03
CHECKS = ("page", "models", "auth", "early error", "stream", "continued turn", "cors")


def smoke(url: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "smoke.py"), "--url", url, "--key", key, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    print(result.stdout)  # the report, shown by pytest when a test fails
    return result


def verdicts(output: str) -> dict[str, str]:
    """{check name: PASS or FAIL} from the report's lines (`  PASS  <name, 15 wide> <detail>`)."""
    found = {}
    for line in output.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0] in ("PASS", "FAIL"):
            found[words[1][:15].strip()] = words[0]
    return found


class BufferEverything:
    """What a deployment that buffers looks like from outside (Mangum, an HTTP API, a proxy):
    the whole body is sent at once, at the end."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        body = b"".join(message.get("body", b"") for message in held if message["type"] == "http.response.body")
        await send(next(message for message in held if message["type"] == "http.response.start"))
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def app(local_table: tuple[Any, str]) -> Any:
    client, name = local_table
    settings = Settings(sessions_table=name, api_keys=(KEY,), cors_origins=(ORIGIN,))
    store = DynamoDBSessionStore(name, ttl_days=30, client=client)
    return create_app(ChatService(store, EchoProvider(delay_seconds=WORD_DELAY_SECONDS), settings))


def test_smoke_passes_against_a_real_server(app: Any) -> None:
    with LiveServer(app) as server:
        result = smoke(server.url, "--origin", ORIGIN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CHECKS, "PASS"), result.stdout
    assert "all 7 checks passed" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_smoke_without_an_origin_checks_that_an_unknown_one_is_refused(app: Any) -> None:
    with LiveServer(app) as server:
        result = smoke(server.url)
    assert result.returncode == 0, result.stdout
    assert "not granted" in result.stdout


def test_smoke_fails_a_deployment_that_buffers_its_streams(app: Any) -> None:
    with LiveServer(BufferEverything(app)) as server:
        result = smoke(server.url, "--origin", ORIGIN)
    assert result.returncode == 1, result.stdout
    found = verdicts(result.stdout)
    assert found["stream"] == "FAIL" and "buffered, not streamed" in result.stdout, result.stdout
    assert all(found[name] == "PASS" for name in CHECKS if name != "stream"), result.stdout
    assert "1 of 7 checks FAILED (stream)" in result.stdout


def test_smoke_fails_with_a_wrong_key(app: Any) -> None:
    with LiveServer(app) as server:
        result = smoke(server.url, key="not-the-key")
    assert result.returncode == 1
    assert verdicts(result.stdout)["models"] == "FAIL" and "401" in result.stdout
    assert "not-the-key" not in result.stdout


@pytest.fixture
def runtime_front(local_table: tuple[Any, str], tmp_path: Path) -> Iterator[tuple[ApiGatewayFront, RuntimeProcess]]:
    """The streaming runtime as Lambda starts it, the real app, the echo model, DynamoDB Local."""
    env = {
        "MODEL_PROVIDER": "echo",
        "ECHO_DELAY_MS": str(int(WORD_DELAY_SECONDS * 1000)),
        "API_KEYS": KEY,
        "CORS_ORIGINS": ORIGIN,
    }
    with (
        FakeRuntimeAPI() as api,
        ApiGatewayFront(api) as front,
        RuntimeProcess(api.address, env=env, log_path=tmp_path / "runtime.log") as runtime,
    ):
        yield front, runtime


def test_smoke_passes_against_the_streaming_runtime(runtime_front: tuple[ApiGatewayFront, RuntimeProcess]) -> None:
    front, runtime = runtime_front
    result = smoke(front.url + "/v1", "--origin", ORIGIN)  # the stack's ApiUrl output ends with /v1
    assert result.returncode == 0, result.stdout + result.stderr + runtime.log()
    assert verdicts(result.stdout) == dict.fromkeys(CHECKS, "PASS"), result.stdout
    assert KEY not in runtime.log()
