"""Real clients against a real Threadline: the server, and the client scripts it is driven by.

Each test module starts one uvicorn server of the app (echo model, an API key) on a fresh
table in the session's DynamoDB Local, and runs each client's script once with the
scenarios it asserts on: a Node script in `tests/clients/node/` (the SDKs pinned in its
package-lock.json) or a Python script run by `.venv/clients/bin/python` (the SDKs pinned
in `tests/clients/requirements.txt`). A script prints, as JSON, what the user saw in each
scenario, or the error the SDK raised. `make clients` installs both; a missing client
fails the test, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore, ensure_table
from handler.app import create_app
from tests.servers import LiveServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE_DIR = HERE / "node"
CLIENTS_PYTHON = ROOT / ".venv" / "clients" / "bin" / "python"
API_KEY = "sk-threadline-clients-test"
HEADER = "X-Hermes-Session-Id"
SCRIPT_TIMEOUT_SECONDS = 90
INSTALL_HINT = "run `make clients` (make test does) to install the client SDKs"


@dataclass(frozen=True)
class Threadline:
    """Where the clients find the server: the SDKs' base URL and the key they send."""

    base_url: str
    api_key: str


def serve_threadline(dynamodb_endpoint: str) -> Iterator[Threadline]:
    """A real server on 127.0.0.1 over a new table on DynamoDB Local; both removed afterwards."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "dynamodb", endpoint_url=dynamodb_endpoint, region_name="us-east-1"
    )
    name = f"clients-{uuid.uuid4().hex[:12]}"
    ensure_table(client, name)
    try:
        store = DynamoDBSessionStore(name, ttl_days=30, client=client)
        settings = Settings(sessions_table=name, api_keys=(API_KEY,))
        app = create_app(ChatService(store, EchoProvider(), settings), settings=settings)
        with LiveServer(app) as live:
            yield Threadline(base_url=f"{live.url}/v1", api_key=API_KEY)
    finally:
        client.delete_table(TableName=name)


def _environment(server: Threadline) -> dict[str, str]:
    """Only what a client needs: no real OpenAI key, no tracing to any service."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        THREADLINE_BASE_URL=server.base_url,
        THREADLINE_API_KEY=server.api_key,
        OPENAI_AGENTS_DISABLE_TRACING="1",
        LANGSMITH_TRACING="false",
        NODE_NO_WARNINGS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(command: list[str], server: Threadline, cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=_environment(server),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.fail(
            f"{Path(command[1]).name} exited {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}",
            pytrace=False,
        )
    seen: dict[str, Any] = json.loads(lines[-1])
    return seen


def run_node(script: str, server: Threadline, *scenarios: str) -> dict[str, Any]:
    """Run `tests/clients/node/<script>` with these scenarios; what the user saw in each."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: the Node clients cannot run; {INSTALL_HINT}", pytrace=False)
    for package in ("openai", "ai", "@ai-sdk/openai"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"the npm package {package!r} is not installed in {NODE_DIR}: {INSTALL_HINT}", pytrace=False)
    return _run([node, str(NODE_DIR / script), *scenarios], server, NODE_DIR)


def run_python(script: str, server: Threadline, *scenarios: str) -> dict[str, Any]:
    """Run `tests/clients/<script>` with the clients' own Python; what the user saw in each."""
    if not CLIENTS_PYTHON.is_file():
        pytest.fail(f"{CLIENTS_PYTHON} does not exist: {INSTALL_HINT}", pytrace=False)
    return _run([str(CLIENTS_PYTHON), str(HERE / script), *scenarios], server, HERE)


def outcome(seen: dict[str, Any], scenario: str) -> dict[str, Any]:
    """One scenario's result; a scenario the client failed fails the test with its error."""
    result: dict[str, Any] = seen[scenario]
    if "error" in result:
        error = result["error"]
        pytest.fail(
            f"{scenario}: the client raised {error.get('type')} (status {error.get('status')}, code {error.get('code')}): {error.get('message')}",
            pytrace=False,
        )
    return result


class ClientRuns:
    """Each script runs once per module, with all the scenarios the module asserts on,
    on the first test that asks (so a client that cannot run fails that test, not a
    fixture); later tests read the same run."""

    def __init__(self, server: Threadline, plan: dict[str, tuple[str, ...]]) -> None:
        self.server = server
        self.plan = plan
        self._seen: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, str] = {}

    def saw(self, script: str, scenario: str) -> dict[str, Any]:
        """What the user saw in `scenario` of `script` (a failed scenario fails the test)."""
        assert scenario in self.plan[script], f"{scenario} is not in the module's plan for {script}"
        if script in self._failed:
            pytest.fail(self._failed[script], pytrace=False)
        if script not in self._seen:
            run = run_node if script.endswith(".mjs") else run_python
            try:
                self._seen[script] = run(script, self.server, *self.plan[script])
            except pytest.fail.Exception as failure:
                self._failed[script] = str(failure)
                raise
        return outcome(self._seen[script], scenario)


def echo(text: str, count: int) -> str:
    """What the echo model answers to `text` when it was given `count` messages."""
    noun = "message" if count == 1 else "messages"
    return f"Echo: {text} (I was given {count} {noun}.)"
