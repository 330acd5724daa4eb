"""Relay: Threadline as users run it, under load, beside a minimal pass-through.

Every server is a process of its own on 127.0.0.1: the project's fake upstream
(`bench/relay_servers.py upstream`) answers each chat request with `TOKENS` words, the
first `FIRST_TOKEN` after the request and the others `GAP` apart (a non-streamed answer
after the same time); Threadline under uvicorn with the `openai` provider pointed at it
(TELEMETRY on, DynamoDB Local); the minimal FastAPI + `openai` pass-through
(`bench/relay_servers.py`); LiteLLM's proxy with `BENCH_LITELLM=1` (`bench/litellm.py`).

The load: `CLIENTS` concurrent clients in this process, each sending its next request as
soon as the last one is answered, every other one streamed. The targets take turns, in
`ROUNDS` rounds, after an unmeasured warm-up of each:

- direct: the clients straight to the fake upstream (the zero of "added");
- pass-through and LiteLLM with the whole conversation (40 earlier messages and a new
  one, as a client without sessions sends it), and with one message;
- Threadline continuing a session whose window of 40 is full (the client sends the new
  message and the session header; the upstream gets the same 41 messages);
- Threadline without a session header, one message (each request creates a session).

Per target: the answer's end (a non-streamed body read, or a stream's last byte), the
first token of streamed answers, requests per second over the phases, and the CPU time
of the server's process and of DynamoDB Local's (from /proc) per request. "Added" is a
target's percentile minus the direct path's with the same body.

The goals compare against DynamoDB's own round trips, measured in the same run while the
session turns run: a probe thread sends the raw HTTP of the window's Query (head and 40
messages) and of a three-item TransactWriteItems to DynamoDB Local, signed before the
clock starts and not parsed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from bench.common import API_KEY, ROOT, SRC, Lab, Row, fmt_ms, median, ms, percentile, reps, say, verdict
from bench.streaming import UvicornProcess

MODEL = "gpt-4o-mini"
CLIENTS = 20
FIRST_TOKEN = 0.080
GAP = 0.020
TOKENS = 5
WINDOW = 40
MESSAGE_CHARS = 240
ROUNDS = 2
SESSION_HEADER = "X-Hermes-Session-Id"

GOAL_SESSION_ADDED_MS = 4.0
"""A session turn adds at most DynamoDB's round trips plus this over the pass-through (p50)."""
GOAL_FIRST_TOKEN_MS = 3.0
"""Its first token at most the history read plus this."""
GOAL_CPU_SESSION_MS = 4.0
GOAL_CPU_STATELESS_MS = 3.0
GOAL_THROUGHPUT_RATIO = 2.0
"""Requests per second with sessions, against LiteLLM's."""


def message(role: str, number: int) -> dict[str, str]:
    words = f"{role} message {number} about the plan for the week, with enough words to be a real one. "
    return {"role": role, "content": (words * (MESSAGE_CHARS // len(words) + 1))[:MESSAGE_CHARS]}


HISTORY = [message("user" if i % 2 == 0 else "assistant", i) for i in range(WINDOW)]
NEW = message("user", WINDOW)


def body(messages: list[dict[str, str]], stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "messages": messages, "stream": stream}).encode()


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    if pid is None:
        return float("nan")
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    url: str
    pid: int | None
    messages: list[dict[str, str]]
    sessions: list[str] = field(default_factory=list)
    """One session per client (Threadline continuing sessions), else none."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    ends: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    streamed_ends: list[float] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    store_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def cpu_ms(self) -> float:
        return ms(self.cpu / self.requests) if self.requests else float("nan")

    def store_cpu_ms(self) -> float:
        return ms(self.store_cpu / self.requests) if self.requests else float("nan")


async def one_request(
    client: httpx.AsyncClient, target: Target, client_number: int, stream: bool
) -> tuple[float, float | None]:
    """One request; (seconds to the answer's end, seconds to the first token or None)."""
    headers = {"Content-Type": "application/json", **target.headers}
    if target.sessions:
        headers[SESSION_HEADER] = target.sessions[client_number]
    content = body(target.messages, stream)
    last = f"word{TOKENS - 1}".encode()
    started = time.perf_counter()
    first: float | None = None
    if not stream:
        response = await client.post(target.url, content=content, headers=headers)
        ended = time.perf_counter() - started
        if response.status_code != 200 or last not in response.content:
            raise RuntimeError(f"{target.name} answered {response.status_code}: {response.content[:300]!r}")
        return ended, None
    seen = b""
    async with client.stream("POST", target.url, content=content, headers=headers) as response:
        async for data in response.aiter_raw():
            if first is None and b"word" in data:
                first = time.perf_counter() - started
            seen = seen[-64:] + data
            if response.status_code != 200:
                raise RuntimeError(f"{target.name} answered {response.status_code}: {data[:300]!r}")
    ended = time.perf_counter() - started
    if first is None or b"[DONE]" not in seen:
        raise RuntimeError(f"{target.name} streamed no whole answer: {seen[-200:]!r}")
    return ended, first


async def drive(client: httpx.AsyncClient, target: Target, count: int, result: Result, store_pid: int | None) -> None:
    """`count` requests from CLIENTS concurrent clients, every other one streamed."""
    numbers = iter(range(count))

    async def worker(client_number: int) -> None:
        for number in numbers:
            stream = number % 2 == 1
            ended, first = await one_request(client, target, client_number, stream)
            result.ends.append(ms(ended))
            if first is not None:
                result.firsts.append(ms(first))
                result.streamed_ends.append(ms(ended))

    cpu, store_cpu, started = cpu_seconds(target.pid), cpu_seconds(store_pid), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    result.seconds += time.perf_counter() - started
    result.cpu += cpu_seconds(target.pid) - cpu
    result.store_cpu += cpu_seconds(store_pid) - store_cpu
    result.requests += count


class RoundTrips(threading.Thread):
    """DynamoDB Local's round trips for a turn's two calls, raw HTTP, over and over until stopped."""

    def __init__(self, lab: Lab, table: str, read_pk: str) -> None:
        super().__init__(name="dynamodb-round-trips", daemon=True)
        from core.store.keys import FIRST_MESSAGE_SK, HEAD_SK

        self.endpoint = lab.endpoint
        self.stopping = threading.Event()
        self.query: list[float] = []
        self.write: list[float] = []
        self.query_body = json.dumps(
            {
                "TableName": table,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                "ExpressionAttributeValues": {
                    ":pk": {"S": read_pk},
                    ":low": {"S": FIRST_MESSAGE_SK},
                    ":high": {"S": HEAD_SK},
                },
                "ScanIndexForward": False,
                "ConsistentRead": True,
                "Limit": WINDOW + 1,
            }
        ).encode()
        puts = [
            {
                "Put": {
                    "TableName": table,
                    "Item": {
                        "pk": {"S": "probe-write"},
                        "sk": {"S": sk},
                        "msg": {"S": json.dumps(m)},
                        "seq": {"N": str(i)},
                        "expires_at": {"N": "4102444800"},
                    },
                }
            }
            for i, (sk, m) in enumerate([("SESSION", {}), ("MSG#1", NEW), ("MSG#2", HISTORY[1])])
        ]
        self.write_body = json.dumps({"TransactItems": puts}).encode()

    def _signed(self, target: str, payload: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(
            method="POST",
            url=f"{self.endpoint}/",
            data=payload,
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{target}"},
        )
        SigV4Auth(Credentials("bench", "bench", "bench"), "dynamodb", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    def run(self) -> None:
        address = urlsplit(self.endpoint)
        connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
        try:
            while not self.stopping.wait(0.02):
                for target, payload, into in (
                    ("Query", self.query_body, self.query),
                    ("TransactWriteItems", self.write_body, self.write),
                ):
                    headers = self._signed(target, payload)
                    started = time.perf_counter()
                    connection.request("POST", "/", payload, headers)
                    reply = connection.getresponse()
                    data = reply.read()
                    elapsed = time.perf_counter() - started
                    if reply.status != 200:
                        raise RuntimeError(f"DynamoDB Local answered {reply.status} to the probe: {data[:300]!r}")
                    into.append(ms(elapsed))
        finally:
            connection.close()

    @contextmanager
    def running(self) -> Iterator[RoundTrips]:
        self.start()
        try:
            yield self
        finally:
            self.stopping.set()
            self.join(timeout=10)


# --------------------------------------------------------------------------- servers


class UpstreamProcess:
    """The fake upstream in a process of its own; stopped when its standard input closes."""

    def __enter__(self) -> UpstreamProcess:
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)])}
        command = [sys.executable, "-m", "bench.relay_servers", "upstream", str(FIRST_TOKEN), str(GAP), str(TOKENS)]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # noqa: S603
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip():
            self.__exit__()
            raise RuntimeError("the fake upstream did not start")
        self.port = int(line)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except Exception:
            self.process.kill()
            self.process.wait(timeout=10)


def server_env(lab: Lab, extra: dict[str, str]) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))},
        **extra,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
    }


async def seed_sessions(client: httpx.AsyncClient, url: str, count: int) -> list[str]:
    """`count` sessions whose window is full: 39 messages sent without a header, plus the reply."""
    sessions = []
    for _ in range(count):
        response = await client.post(
            url,
            content=body(HISTORY[:-1], False),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"seeding a session answered {response.status_code}: {response.text[:300]}")
        sessions.append(response.headers[SESSION_HEADER])
    return sessions


# --------------------------------------------------------------------------- the run


@dataclass
class Measured:
    results: dict[str, Result]
    query_ms: float
    write_ms: float
    litellm: str | None
    """Why LiteLLM was not run, or None when it was."""


async def measure(lab: Lab, targets: dict[str, Target], requests: int, probe: RoundTrips) -> dict[str, Result]:
    results = {name: Result() for name in targets}
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for target in targets.values():
            if target.name == "session":
                target.sessions = await seed_sessions(client, target.url, CLIENTS)
        for target in targets.values():
            await drive(client, target, CLIENTS * 2, Result(), lab.store_pid)  # warm-up, not counted
        for number in range(ROUNDS):
            for name, target in targets.items():
                if name == "session":
                    with probe.running() if number == 0 else _nothing():
                        await drive(client, target, requests // ROUNDS, results[name], lab.store_pid)
                else:
                    await drive(client, target, requests // ROUNDS, results[name], lab.store_pid)
            say(f"relay: round {number + 1}/{ROUNDS} done")
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def run_targets(lab: Lab) -> Measured:
    from bench.litellm import litellm_proxy
    from core.store.base import NewTurn, SessionKey
    from core.store.dynamodb import DynamoDBSessionStore, session_pk

    requests = reps(600, 160)
    table = lab.new_table("relay")
    work = lab.work / "relay"
    work.mkdir()
    probe_key = SessionKey("probe", "probe")
    store = DynamoDBSessionStore(table, ttl_days=1)
    asyncio.run(store.append(probe_key, NewTurn(messages=HISTORY, system=[], title="probe"), None, fresh_session=True))
    probe = RoundTrips(lab, table, session_pk(probe_key))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with ExitStack() as stack:
        upstream = stack.enter_context(UpstreamProcess())
        openai_env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-bench"}
        ours = stack.enter_context(
            UvicornProcess(
                server_env(
                    lab,
                    lab.env(
                        table,
                        MODEL_PROVIDER="openai",
                        MODELS=MODEL,
                        TELEMETRY="on",
                        HISTORY_WINDOW=str(WINDOW),
                        **openai_env,
                    ),
                ),
                work / "threadline.log",
            )
        )
        passthrough = stack.enter_context(
            UvicornProcess(
                server_env(lab, openai_env), work / "passthrough.log", app="bench.relay_servers:passthrough_app"
            )
        )
        litellm, why_not = stack.enter_context(litellm_proxy(upstream.base_url, MODEL, work))
        direct = f"{upstream.base_url}/chat/completions"
        full = [*HISTORY, NEW]
        targets = {
            "direct": Target("direct", direct, None, full),
            "passthrough": Target("passthrough", f"{passthrough.url}/v1/chat/completions", passthrough.pid, full),
            "session": Target("session", f"{ours.url}/v1/chat/completions", ours.pid, [NEW], headers=auth),
            "direct-1": Target("direct-1", direct, None, [NEW]),
            "passthrough-1": Target("passthrough-1", f"{passthrough.url}/v1/chat/completions", passthrough.pid, [NEW]),
            "stateless": Target("stateless", f"{ours.url}/v1/chat/completions", ours.pid, [NEW], headers=auth),
        }
        if litellm is not None:
            targets["litellm"] = Target(
                "litellm", f"{litellm.url}/v1/chat/completions", litellm.pid, full, headers=litellm.headers
            )
        results = asyncio.run(measure(lab, targets, requests, probe))
    for name, result in results.items():
        say(
            f"relay: {name}: end p50 {median(result.ends):.1f} p99 {percentile(result.ends, 99):.1f} ms, "
            f"first token p50 {median(result.firsts):.1f} ms, {result.rate:.0f} req/s, "
            f"CPU {result.cpu_ms():.2f} ms/request, DynamoDB Local CPU {result.store_cpu_ms():.2f} ms/request"
        )
    say(
        f"relay: DynamoDB round trips: Query p50 {median(probe.query):.2f} ms, "
        f"write p50 {median(probe.write):.2f} ms ({len(probe.query)} each)"
    )
    return Measured(results, median(probe.query), median(probe.write), why_not)


def added(result: Result, base: Result, q: float = 50, attr: str = "ends") -> float:
    """A target's percentile minus the direct path's (same body), in ms."""
    return percentile(getattr(result, attr), q) - percentile(getattr(base, attr), q)


def summary(name: str, result: Result, base: Result) -> str:
    return (
        f"{name}: +{added(result, base):.1f} / +{added(result, base, 99):.1f} ms, first token "
        f"+{added(result, base, attr='firsts'):.1f} ms, {result.rate:.0f} req/s, CPU {result.cpu_ms():.1f} ms"
    )


def rows(measured: Measured, requests: int) -> list[Row]:
    r = measured.results
    direct, passthrough, session = r["direct"], r["passthrough"], r["session"]
    direct1, passthrough1, stateless = r["direct-1"], r["passthrough-1"], r["stateless"]
    query, write = measured.query_ms, measured.write_ms
    n = f"{CLIENTS} clients, {requests} requests each, half streamed"

    def over_passthrough(q: float = 50, attr: str = "ends") -> float:
        return added(session, direct, q, attr) - added(passthrough, direct, q, attr)

    session_goal = query + write + GOAL_SESSION_ADDED_MS
    direct_says = (
        f"direct to the upstream: {fmt_ms(median(direct.ends))} / {fmt_ms(percentile(direct.ends, 99))}, "
        f"first token {fmt_ms(median(direct.firsts))}, {direct.rate:.0f} req/s"
    )
    stateless_added = added(stateless, direct1) - added(passthrough1, direct1)
    out = [
        Row(
            f"Relay: minimal FastAPI + openai pass-through, 41 messages ({n}): "
            "added p50 / p99, first token, req/s, Python CPU per request",
            summary("pass-through", passthrough, direct),
            direct_says,
            f"+{added(passthrough, direct):.1f} ms at p50",
            "-",
            "info",
        ),
        Row(
            "Relay: session turn, window of 40 full, added p50 over the pass-through",
            summary("ours", session, direct),
            summary("pass-through", passthrough, direct),
            f"{over_passthrough():+.1f} ms (p99 {over_passthrough(99):+.1f} ms)",
            f"<= DynamoDB round trips ({query:.1f} + {write:.1f} ms) + {GOAL_SESSION_ADDED_MS:g} ms",
            verdict(over_passthrough() <= session_goal),
        ),
        Row(
            "Relay: session turn, first token added over the pass-through (p50)",
            f"+{added(session, direct, attr='firsts'):.1f} ms",
            f"pass-through: +{added(passthrough, direct, attr='firsts'):.1f} ms",
            f"{over_passthrough(attr='firsts'):+.1f} ms",
            f"<= history read ({query:.1f} ms) + {GOAL_FIRST_TOKEN_MS:g} ms",
            verdict(over_passthrough(attr="firsts") <= query + GOAL_FIRST_TOKEN_MS),
        ),
        Row(
            "Relay: session turn, stream end added over the pass-through (p50)",
            f"+{added(session, direct, attr='streamed_ends'):.1f} ms",
            f"pass-through: +{added(passthrough, direct, attr='streamed_ends'):.1f} ms",
            f"{over_passthrough(attr='streamed_ends'):+.1f} ms",
            "-",
            "info",
        ),
        Row(
            "Relay: Python CPU per session turn, window of 40 full (the server process)",
            fmt_ms(session.cpu_ms()),
            f"pass-through, 41 messages: {fmt_ms(passthrough.cpu_ms())}",
            f"{session.cpu_ms() - passthrough.cpu_ms():+.1f} ms",
            f"<= {GOAL_CPU_SESSION_MS:g} ms",
            verdict(session.cpu_ms() <= GOAL_CPU_SESSION_MS),
        ),
        Row(
            "Relay: stateless turn (no session header, one message): added p50 / p99, first token, req/s, Python CPU",
            summary("ours", stateless, direct1),
            summary("pass-through", passthrough1, direct1),
            f"{stateless_added:+.1f} ms at p50; CPU {stateless.cpu_ms() - passthrough1.cpu_ms():+.1f} ms",
            f"CPU <= {GOAL_CPU_STATELESS_MS:g} ms",
            verdict(stateless.cpu_ms() <= GOAL_CPU_STATELESS_MS),
        ),
        Row(
            "Relay: DynamoDB Local CPU per turn (runs on AWS's side when deployed)",
            f"session turn: {fmt_ms(session.store_cpu_ms())}",
            f"stateless turn: {fmt_ms(stateless.store_cpu_ms())}",
            "-",
            "-",
            "info",
        ),
    ]
    if "litellm" in r:
        litellm = r["litellm"]
        out.append(
            Row(
                f"Relay: LiteLLM proxy, 41 messages ({n})",
                summary("LiteLLM", litellm, direct),
                summary("pass-through", passthrough, direct),
                f"{added(litellm, direct) - added(passthrough, direct):+.1f} ms at p50",
                "-",
                "info",
            )
        )
        ratio = session.rate / litellm.rate
        out.append(
            Row(
                f"Relay: throughput with sessions at {CLIENTS} clients against LiteLLM's (no sessions)",
                f"{session.rate:.0f} req/s",
                f"LiteLLM: {litellm.rate:.0f} req/s",
                f"{ratio:.2f}x",
                f">= {GOAL_THROUGHPUT_RATIO:g}x",
                verdict(ratio >= GOAL_THROUGHPUT_RATIO),
            )
        )
    else:
        out.append(
            Row(
                f"Relay: throughput with sessions at {CLIENTS} clients",
                f"{session.rate:.0f} req/s",
                f"pass-through: {passthrough.rate:.0f} req/s (LiteLLM not run: {measured.litellm})",
                f"{session.rate / passthrough.rate:.2f}x",
                f">= {GOAL_THROUGHPUT_RATIO:g}x LiteLLM's",
                "info",
            )
        )
    return out


def run(lab: Lab) -> list[Row]:
    measured = run_targets(lab)
    return rows(measured, reps(600, 160))
