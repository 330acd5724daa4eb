"""Telemetry as an operator sees it: one JSON log line and EMF metrics per request,
with ids, hashes and numbers only (never message content or keys), and nothing at
all when it is off."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core import telemetry
from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from handler.auth import principal_id

KEY = "sk-very-secret-key-0123456789"
SECRET_TEXT = "my private message about the merger"


@pytest.fixture
async def api(moto_table: tuple[Any, str]) -> AsyncIterator[httpx.AsyncClient]:
    client, name = moto_table
    settings = Settings(sessions_table=name, api_keys=(KEY,), telemetry=True)
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), settings)
    transport = httpx.ASGITransport(app=create_app(service, settings=settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


def output_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def metric_values(lines: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for line in lines:
        if "_aws" in line:
            for directive in line["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = line[metric["Name"]]
                    values[metric["Name"]] = value[0] if isinstance(value, list) else value
                values.update({f"dim:{d}": line[d] for dims in directive["Dimensions"] for d in dims})
    return values


async def test_a_turn_logs_one_line_and_its_metrics(api: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = await api.post(
        "/v1/chat/completions",
        json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": SECRET_TEXT}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Hermes-Session-Id": "s-telemetry"},
    )
    assert response.status_code == 200
    out = capsys.readouterr().out
    assert SECRET_TEXT not in out and "merger" not in out and KEY not in out
    lines = output_lines(out)
    logs = [line for line in lines if line.get("message") == "request"]
    assert len(logs) == 1
    log = logs[0]
    assert log["route"] == "/v1/chat/completions" and log["method"] == "POST" and log["status"] == 200
    assert log["session_id"] == "s-telemetry" and log["model"] == "echo" and log["stream"] is True
    assert log["principal"] == principal_id(KEY)
    assert log["latency_ms"] >= log["ttft_ms"] > 0
    chunks = [json.loads(f[6:]) for f in response.text.split("\n\n") if f.startswith("data: {")]
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert log["tokens_out"] == len(content_chunks)  # the echo model counts a word per chunk
    assert log["store_calls"] == 2 and log["service"] == "threadline" and log["request_id"]
    metrics = metric_values(lines)
    for name in ("Requests", "Latency", "TimeToFirstToken", "TokensIn", "TokensOut", "StoreLatency"):
        assert name in metrics, name
    assert metrics["StoreReadFallbacks"] == 0 and metrics["ConflictsRetried"] == 0


async def test_errors_are_counted_by_code(api: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    await api.post(
        "/v1/chat/completions", json={"model": "echo", "messages": []}, headers={"Authorization": "Bearer nope"}
    )
    await api.get("/v1/nowhere", headers={"Authorization": f"Bearer {KEY}"})
    lines = output_lines(capsys.readouterr().out)
    codes = [line["code"] for line in lines if "_aws" in line and "Errors" in line]
    assert codes == ["invalid_api_key", "not_found"]
    logs = [line for line in lines if line.get("message") == "request"]
    assert [log["status"] for log in logs] == [401, 404]
    assert logs[1]["route"] == "unmatched"
    assert "nope" not in json.dumps(lines)


async def test_a_store_read_fallback_is_counted(
    api: httpx.AsyncClient, moto_table: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = moto_table

    def fail(**kwargs: Any) -> Any:
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    client.meta.events.register("before-send.dynamodb.Query", fail)
    capsys.readouterr()
    try:
        response = await api.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {KEY}", "X-Hermes-Session-Id": "s-fallback"},
        )
    finally:
        client.meta.events.unregister("before-send.dynamodb.Query", fail)
    assert response.status_code == 200
    metrics = metric_values(output_lines(capsys.readouterr().out))
    assert metrics["StoreReadFallbacks"] == 1


def test_the_first_request_of_a_process_is_a_cold_start() -> None:
    first = telemetry.RequestRecord(method="GET", route="/")
    assert first.cold_start is False  # records only become cold starts through begin()
    script = (
        "import sys; sys.path[:0] = ['src']\n"
        "from core import telemetry\n"
        "a = telemetry.begin('GET', '/'); b = telemetry.begin('GET', '/')\n"
        "print(a.cold_start, b.cold_start)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]


def test_with_telemetry_off_powertools_is_never_imported() -> None:
    script = (
        "import sys, json; sys.path[:0] = ['src', '.']\n"
        "from fastapi.testclient import TestClient\n"
        "from handler.app import create_app\n"
        "client = TestClient(create_app())\n"
        "assert client.get('/health').status_code == 200\n"
        "assert client.get('/v1/models').status_code == 200\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aws_lambda_powertools'))))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TELEMETRY": "off", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
