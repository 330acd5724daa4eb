"""Streaming: what Threadline adds between an upstream's token and the client's chunk.

A fake OpenAI-compatible upstream (`tests/fakes/openai_upstream.py`, in a thread of
this process) streams `TOKENS` content deltas `GAP` seconds apart and records when it
hands each one to its server (`chunk_times`, `time.monotonic()`). Three paths take
turns, request after request:

- direct (the baseline): this process's client -> the fake upstream;
- uvicorn: the same client code -> our app under uvicorn (a process of its own,
  `MODEL_PROVIDER=openai`) -> the fake upstream;
- runtime: a fake Lambda Runtime API (`tests/e2e/fake_runtime_api.py`, in this process)
  hands a REST event for a streamed chat request to the streaming runtime, started as
  Lambda starts it (`exec-wrapper`, `tests/e2e/runtime_process.py`) -> our app -> the
  fake upstream; a chunk counts when it has reached the fake Runtime API.

Per token: arrival at the client (or the Runtime API) minus the upstream's
`chunk_times` entry for it (one clock: `time.monotonic()` is system-wide). The added
latency is a path's median minus the direct path's median, for the first token of
each request and over all tokens. Client chunks (SSE frames, and for the runtime, HTTP
chunks) carrying content are counted against the upstream's deltas.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import API_KEY, ROOT, SRC, Lab, Row, fmt_ms, median, ms, reps, say, verdict

TOKENS = 20
GAP = 0.05
GOAL_ADDED_MS = 5.0
MODEL = "gpt-4o-mini"
HEADLONG_TOKENS = 3


def content_of(frame: bytes) -> str | None:
    """The delta's text of one SSE `data:` frame, or None (role, finish, usage, [DONE], comments)."""
    text = frame.decode().strip()
    if not text.startswith("data: ") or text == "data: [DONE]":
        return None
    body = json.loads(text[len("data: ") :])
    choices = body.get("choices") or []
    content = choices[0].get("delta", {}).get("content") if choices else None
    return content if isinstance(content, str) and content else None


def frames_of(buffer: bytes) -> tuple[list[bytes], bytes]:
    *frames, rest = buffer.split(b"\n\n")
    return [frame for frame in frames if frame.strip()], rest


@dataclass
class Sample:
    """One streamed request: when each content delta arrived, and how it was chunked."""

    arrivals: list[float] = field(default_factory=list)
    chunks_with_content: int = 0
    most_deltas_in_a_chunk: int = 0


def stream_over_http(client: httpx.Client, url: str, headers: dict[str, str]) -> Sample:
    """POST a streamed chat request; note when each content frame arrived. The client of
    the direct and uvicorn paths alike."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Count for me."}]}
    sample = Sample()
    buffer = b""
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.read()[:300]!r}")
        for data in response.iter_raw():
            arrived = time.monotonic()
            frames, buffer = frames_of(buffer + data)
            deltas = sum(content_of(frame) is not None for frame in frames)
            sample.arrivals.extend([arrived] * deltas)
            if deltas:
                sample.chunks_with_content += 1
                sample.most_deltas_in_a_chunk = max(sample.most_deltas_in_a_chunk, deltas)
    return sample


def stream_through_runtime(api: Any, event: dict[str, Any]) -> Sample:
    invocation = api.wait(api.queue(event), timeout=60)
    response = invocation.response
    if response is None:
        raise RuntimeError(f"the runtime reported an error: {invocation.error}")
    prelude, _payload = response.split()
    if prelude.get("statusCode") != 200:
        raise RuntimeError(f"the runtime answered {prelude.get('statusCode')}: {_payload[:300]!r}")
    sample = Sample()
    buffer = b""
    for chunk in response.payload_chunks():
        frames, buffer = frames_of(buffer + chunk.data)
        deltas = sum(content_of(frame) is not None for frame in frames)
        sample.arrivals.extend([chunk.at] * deltas)
        if deltas:
            sample.chunks_with_content += 1
            sample.most_deltas_in_a_chunk = max(sample.most_deltas_in_a_chunk, deltas)
    return sample


@dataclass
class Path_:
    name: str
    first: list[float] = field(default_factory=list)
    every: list[float] = field(default_factory=list)
    deltas: int = 0
    chunks: int = 0
    most_in_a_chunk: int = 0
    mismatched_requests: int = 0

    def add(self, sample: Sample, sent: list[float]) -> None:
        latencies = [ms(arrived - at) for arrived, at in zip(sample.arrivals, sent, strict=False)]
        if len(sample.arrivals) != len(sent):
            self.mismatched_requests += 1
        if latencies:
            self.first.append(latencies[0])
            self.every.extend(latencies)
        self.deltas += len(sent)
        self.chunks += sample.chunks_with_content
        self.most_in_a_chunk = max(self.most_in_a_chunk, sample.most_deltas_in_a_chunk)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class UvicornProcess:
    """Our app under uvicorn in a process of its own, on a free port of 127.0.0.1; always stopped."""

    def __init__(self, env: dict[str, str], log: Path, app: str = "handler.app:app") -> None:
        self.port = free_port()
        self.app = app
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornProcess:
        command = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log", "--lifespan", "off"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"uvicorn did not start: {self.log_path.read_text()[-500:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def added_row(label: str, path: list[float], direct: list[float], detail: str, *, goal: bool = True) -> Row:
    """A path's median latency beside the direct path's; `goal=False` for an informative row."""
    added = median(path) - median(direct)
    return Row(
        f"{label} ({detail})",
        fmt_ms(median(path)),
        f"direct client -> upstream: {fmt_ms(median(direct))}",
        f"{added:+.2f} ms added",
        f"< {GOAL_ADDED_MS:g} ms added" if goal else "-",
        verdict(added < GOAL_ADDED_MS if goal else None),
    )


def chunk_row(label: str, path: Path_, direct: Path_) -> Row:
    ok = path.chunks == path.deltas and path.most_in_a_chunk <= 1 and not path.mismatched_requests
    return Row(
        label,
        f"{path.chunks} chunks for {path.deltas} deltas (at most {path.most_in_a_chunk} per chunk)",
        f"direct: {direct.chunks} chunks for {direct.deltas} deltas",
        f"{path.chunks / path.deltas if path.deltas else float('nan'):.2f} chunk per delta",
        "1 chunk per delta",
        verdict(ok),
    )


def run(lab: Lab) -> list[Row]:
    from tests.e2e.events import rest_event
    from tests.e2e.fake_runtime_api import FakeRuntimeAPI
    from tests.e2e.runtime_process import RuntimeProcess
    from tests.fakes.openai_upstream import FakeUpstream, text

    requests = reps(10, 3)
    table = lab.new_table("streaming")
    tokens = [f" token{i}" for i in range(TOKENS)]
    # An empty delta first (recorded, but no token: nobody forwards it), so that the
    # first token, like every other, comes GAP after the one before, as a model's does.
    gapped = text(["", *tokens], gap=GAP)
    # The first token right behind the response head: what it costs to open the stream.
    headlong = text(tokens[:HEADLONG_TOKENS], gap=GAP)
    work = lab.work / "streaming"
    work.mkdir()
    paths = {kind: Path_(kind) for kind in ("direct", "uvicorn", "runtime")}
    headlong_paths = {kind: Path_(kind) for kind in ("direct", "uvicorn", "runtime")}
    with FakeUpstream(default_reply=gapped) as upstream:
        app_env = lab.env(
            table,
            MODEL_PROVIDER="openai",
            MODELS=MODEL,
            OPENAI_BASE_URL=upstream.base_url,
            OPENAI_API_KEY="sk-bench",
            TELEMETRY="on",
        )
        server_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))},
            **app_env,
            "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
        }
        event = rest_event(
            "POST",
            "/v1/chat/completions",
            {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Count for me."}]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with (
            UvicornProcess(server_env, work / "uvicorn.log") as server,
            FakeRuntimeAPI() as api,
            RuntimeProcess(api.address, env=app_env, log_path=work / "runtime.log"),
            httpx.Client(timeout=30) as client,
        ):

            def one(kind: str, reply: Any = None, path: Path_ | None = None) -> None:
                seen = len(upstream.chat_requests)
                if reply is not None:
                    upstream.push(reply)
                if kind == "direct":
                    sample = stream_over_http(client, f"{upstream.base_url}/chat/completions", auth)
                elif kind == "uvicorn":
                    sample = stream_over_http(client, f"{server.url}/v1/chat/completions", auth)
                else:
                    sample = stream_through_runtime(api, event)
                record = upstream.wait_for_requests(seen + 1)[seen].wait_done(timeout=30)
                sent = list(record.chunk_times)
                if reply is not headlong:
                    sent = sent[1:]  # the empty delta
                if path is not None:
                    path.add(sample, sent)

            for kind in paths:
                one(kind)  # unmeasured: connections, the SDK client, first imports
            for number in range(requests):
                for kind, path in paths.items():
                    one(kind, gapped, path)
                for kind, path in headlong_paths.items():
                    one(kind, headlong, path)
                say(f"streaming: round {number + 1}/{requests} done")
    for label, group in (("gapped", paths), ("headlong", headlong_paths)):
        for path in group.values():
            say(
                f"streaming ({label}): {path.name}: first token median {median(path.first):.2f} ms, "
                f"all tokens median {median(path.every):.2f} ms, max {max(path.every, default=float('nan')):.2f} ms"
            )
    direct, uvicorn, runtime = paths["direct"], paths["uvicorn"], paths["runtime"]
    detail = f"{requests} x {TOKENS} tokens {GAP * 1000:.0f} ms apart"
    headlong_detail = f"{requests} requests"
    return [
        added_row("Streaming via uvicorn, first token", uvicorn.first, direct.first, detail),
        added_row("Streaming via uvicorn, every token", uvicorn.every, direct.every, detail),
        added_row("Streaming via Lambda streaming runtime, first token", runtime.first, direct.first, detail),
        added_row("Streaming via Lambda streaming runtime, every token", runtime.every, direct.every, detail),
        chunk_row("Streaming via uvicorn: SSE chunks per upstream delta", uvicorn, direct),
        chunk_row("Streaming via streaming runtime: HTTP chunks per upstream delta", runtime, direct),
        added_row(
            "Streaming via uvicorn, first token right behind the upstream's response head",
            headlong_paths["uvicorn"].first,
            headlong_paths["direct"].first,
            headlong_detail,
            goal=False,
        ),
        added_row(
            "Streaming via streaming runtime, first token right behind the upstream's response head",
            headlong_paths["runtime"].first,
            headlong_paths["direct"].first,
            headlong_detail,
            goal=False,
        ),
    ]
