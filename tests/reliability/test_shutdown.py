"""`make run` stops within 5 s on SIGTERM and on Ctrl-C (SIGINT), whatever is in flight,
and takes its DynamoDB Local with it.

The real `python -m devtools.serve` runs as a subprocess on a free port with its data
in a temporary folder and the echo model at its `make run` pace (30 ms a word). In
flight when the signal arrives: a stream held open (about 9 s of words, its first
frames read), and idempotent buffered requests as long. Before the fix uvicorn waited
for every connection forever (and a wedged idempotent request held worker threads
the interpreter then waited for).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import httpx
import pytest

from core.settings import Settings
from devtools.dynamodb_local import DynamoDBLocal
from tests.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # ~9 s of echo at 30 ms a word
STOP_BOUND_SECONDS = 5.0


def children(pid: int) -> list[int]:
    """The direct children of `pid` (Linux /proc)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(child) for child in (task / "children").read_text().split())
    except OSError:
        pass  # gone
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=1) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, "devtools.serve exited at start"
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("devtools.serve did not start")


@dataclass
class MakeRun:
    process: subprocess.Popen[bytes]
    url: str

    def output(self) -> str:
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    """`python -m devtools.serve` on a free port, its data in a temporary folder; killed
    (with its DynamoDB Local) if the test left it running."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "DYNAMODB_DATA_DIR": str(tmp_path / "data")}
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "MODEL_PROVIDER", "ECHO_DELAY_MS", "API_KEYS", "SESSIONS_TABLE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield MakeRun(process, f"http://127.0.0.1:{port}")
    finally:
        java = [pid for pid in children(process.pid) if "DynamoDBLocal.jar" in command_line(pid)]
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in java:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.stdout:
            process.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_make_run_stops_within_five_seconds_whatever_is_in_flight(
    make_run: MakeRun, sig: signal.Signals, tmp_path: Path, report: Callable[[str, str], None]
) -> None:
    process = make_run.process
    await wait_until_serving(make_run.url, process)
    java = [pid for pid in children(process.pid) if "DynamoDBLocal.jar" in command_line(pid)]
    assert len(java) == 1, "devtools.serve should have started one DynamoDB Local"

    body = {"model": "echo", "messages": [{"role": "user", "content": LONG_TEXT}]}
    stream_body = {**body, "stream": True}
    async with (
        httpx.AsyncClient(base_url=make_run.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=stream_body) as stream,
    ):
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("data: ")  # the stream is open
        buffered = [
            asyncio.create_task(
                http.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": f"in-flight-{i}"})
            )
            for i in range(5)
        ]
        await asyncio.sleep(1.0)  # they have reached the model
        assert not any(task.done() for task in buffered)

        sent = time.monotonic()
        process.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(process.wait, STOP_BOUND_SECONDS + 5)
        took = time.monotonic() - sent
        for task in buffered:
            task.cancel()
        await asyncio.gather(*buffered, return_exceptions=True)

    output = make_run.output()
    assert process.poll() is not None, f"still running {took:.1f} s after {sig.name}:\n{output[-2000:]}"
    assert took < STOP_BOUND_SECONDS, f"stopped {took:.1f} s after {sig.name}:\n{output[-2000:]}"
    assert not alive(java[0]), "DynamoDB Local outlived make run"
    assert "DynamoDB Local stopped." in output
    report(
        f"shutdown_{sig.name}",
        f"shutdown: make run exited {took:.1f} s after {sig.name} (bound {STOP_BOUND_SECONDS:.0f} s)",
    )

    # The idempotent requests cut short freed their keys: no record is left in progress.
    with DynamoDBLocal(data_dir=tmp_path / "data") as database:
        client = botocore.session.get_session().create_client(
            "dynamodb", endpoint_url=database.endpoint, region_name="us-east-1"
        )
        items = client.scan(TableName=Settings().sessions_table, ConsistentRead=True)["Items"]
    assert [item for item in items if item["pk"]["S"].startswith("IDEMPOTENCY#")] == []
