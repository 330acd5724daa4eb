"""Resumable streams (issue 13): what recording an answer costs, and what following
or resuming it from another process waits.

Two Threadline servers under uvicorn (`bench/resumable_server.py`: the app as it
is, its DynamoDB client's requests counted) share one DynamoDB Local table, with the
`openai` provider pointed at the project's fake upstream (`tests/fakes/openai_upstream.py`,
in a thread of this process) that streams one token per chunk. Server A runs every
answer; server B is "another process" (on Lambda, another execution environment),
which follows a run by reading the store.

- Writes per 1,000-token answer: server A's DynamoDB API calls that write (and the
  write capacity units DynamoDB Local reports for them, `ReturnConsumedCapacity`),
  and the event batches the answer left in the table (count, bytes as DynamoDB sizes
  items), for a recorded answer against a plain one in the same run: a chat stream
  with `X-Threadline-Resumable: true` against one without; a stored Responses stream
  against the same response not streamed (the turn's own transaction). Two paces:
  fast (the upstream sends 1,000 tokens back to back) and 50 tokens/s (quick mode:
  200 tokens at 50/s, the counts scaled x5 per 1,000 tokens; that overstates the fixed
  part, the run's opening and its commit).
- Added latency per delta: an original client streams a resumable chat answer of
  `LIVE_TOKENS` tokens at 50/s from A; as soon as it has the session id, one follower
  resumes it from B (`GET /v1/sessions/{id}/stream?after=0`: the store, polled) and
  one from A (the in-process broadcast). Per chunk the original client received after
  the follower was connected: the follower's arrival minus the original's.
- Reconnect to the first missed event: a client reads 20 to 120 chunks (events; drawn
  at random, seeded), drops the connection and reconnects to B with `after=N` (`starting_after=N`); the
  time from sending that request to receiving chunk N (event N+1), for an answer that
  has finished (pure replay) and for one still live. Baseline: a new plain stream's
  time to its first content chunk, the same server and upstream.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from bench.common import API_KEY, ROOT, SRC, Lab, Row, fmt_ms, median, ms, percentile, reps, say, verdict
from bench.dynamodb_counter import Counts, item_bytes
from bench.streaming import UvicornProcess

MODEL = "gpt-4o-mini"
ANSWER_TOKENS = 1000
PACE = 50.0
"""Tokens per second of the paced model."""
PACED_TOKENS = reps(1000, 200)
LIVE_TOKENS = 200
DROP_AFTER = (20, 120)
"""The client drops after a number of events drawn from this range (seeded): a fixed
number would put every drop at the same point between two flushes."""
FLUSH_MS = 250
POLL_MS = 100
GOAL_WRITES = 100
GOAL_FOLLOWER_MS = FLUSH_MS + POLL_MS
GOAL_RECONNECT_MS = 300
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SESSION_HEADER = "x-hermes-session-id"
RESUMABLE = {"X-Threadline-Resumable": "true"}


# --------------------------------------------------------------------------- streams


@dataclass
class Trace:
    """One streamed HTTP answer as a client saw it."""

    sent: float = 0.0
    opened: float = math.nan
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[int, float, bool]] = field(default_factory=list)
    """(chunk number or sequence number, arrival, carries content)."""
    response_id: str | None = None

    def arrival(self, seq: int) -> float:
        return next((at for number, at, _content in self.events if number == seq), math.nan)

    def first_content(self) -> float:
        return next((at for _number, at, content in self.events if content), math.nan)


def parse_data(frame: bytes) -> dict[str, Any] | None:
    """The JSON of an SSE frame's `data:` line; None for comments and `[DONE]`."""
    for line in frame.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            body = json.loads(line[len("data: ") :])
            return body if isinstance(body, dict) else None
    return None


def chat_content(body: dict[str, Any]) -> bool:
    choices = body.get("choices") or []
    return bool(choices and choices[0].get("delta", {}).get("content"))


async def read_stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    responses: bool,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    first: int = 0,
    drop_after: int | None = None,
    on_open: Callable[[Trace], None] | None = None,
) -> Trace:
    """Read an SSE answer. Chat chunks are numbered from `first` in order (as the API
    counts them); Responses events by their `sequence_number`. With `drop_after`, the
    connection is closed once that many events have arrived."""
    trace = Trace(sent=time.monotonic())
    number = first
    buffer = b""
    async with client.stream(method, url, json=body, headers={**AUTH, **(headers or {})}) as response:
        trace.opened = time.monotonic()
        trace.headers = {k.lower(): v for k, v in response.headers.items()}
        if response.status_code != 200:
            raise RuntimeError(f"{method} {url} answered {response.status_code}: {(await response.aread())[:300]!r}")
        if on_open is not None:
            on_open(trace)
        async for data in response.aiter_raw():
            arrived = time.monotonic()
            *frames, buffer = (buffer + data).split(b"\n\n")
            for frame in frames:
                event = parse_data(frame)
                if event is None:
                    continue
                if responses:
                    seq = int(event["sequence_number"])
                    content = event.get("type") == "response.output_text.delta"
                    if trace.response_id is None and isinstance(event.get("response"), dict):
                        trace.response_id = event["response"].get("id")
                else:
                    seq, number = number, number + 1
                    content = chat_content(event)
                trace.events.append((seq, arrived, content))
                if drop_after is not None and len(trace.events) >= drop_after:
                    return trace
    return trace


def chat_body() -> dict[str, Any]:
    return {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Count for me."}]}


def responses_body(stream: bool = True) -> dict[str, Any]:
    return {"model": MODEL, "stream": stream, "input": "Count for me."}


# --------------------------------------------------------------------------- servers


@dataclass
class Servers:
    a: str
    """Runs the answers."""
    b: str
    """Another process on the same table."""
    upstream: Any
    table: str
    lab: Lab

    def reply(self, tokens: int, gap: float) -> None:
        from tests.fakes.openai_upstream import text

        self.upstream.push(text([f" w{i}" for i in range(tokens)], gap=gap))

    async def counts(self, client: httpx.AsyncClient, server: str, *, reset: bool = False) -> Counts:
        response = await client.request("POST" if reset else "GET", f"{server}/bench/dynamodb")
        response.raise_for_status()
        return Counts.from_json(response.json())

    async def settled(self, client: httpx.AsyncClient, server: str) -> Counts:
        """The counts once the server has stopped calling DynamoDB (a run's last write
        lands after its client has `[DONE]`)."""
        last = await self.counts(client, server)
        for _ in range(40):
            await asyncio.sleep(0.4)
            now = await self.counts(client, server)
            if now.calls == last.calls:
                return now
            last = now
        return last

    def batches(self) -> dict[str, int]:
        """Every recorded event batch in the table: key -> its size in bytes."""
        client = self.lab.client()
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "attribute_exists(#first)",
            "ExpressionAttributeNames": {"#first": "first"},
        }
        found: dict[str, int] = {}
        while True:
            page = client.scan(**request)
            for item in page.get("Items", []):
                found[item["pk"]["S"] + "|" + item["sk"]["S"]] = item_bytes(item)
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --------------------------------------------------------------------------- 1. writes


@dataclass
class Cost:
    counts: Counts
    batches: int
    batch_bytes: int


@dataclass
class PerThousand:
    """A recorded answer's cost per 1,000 tokens. When it was measured on fewer tokens,
    the recording's own part (what it costs over the plain answer) is scaled, the plain
    answer's turn counted once: that scales the run's opening write too (one write), so
    it overstates a little."""

    recorded: Cost
    plain: Cost
    scale: float

    @property
    def writes(self) -> float:
        return self.plain.counts.writes + (self.recorded.counts.writes - self.plain.counts.writes) * self.scale

    @property
    def units(self) -> float:
        plain = self.plain.counts.write_units
        return plain + (self.recorded.counts.write_units - plain) * self.scale

    def text(self) -> str:
        return (
            f"{self.writes:.0f} writes ({self.units:.0f} WCU), {self.recorded.batches * self.scale:.0f} event batches, "
            f"{self.recorded.batch_bytes * self.scale / 1024:.1f} KB of events stored"
        )


def plain_text(cost: Cost) -> str:
    return f"{cost.counts.writes} write(s) ({cost.counts.write_units:.0f} WCU)"


async def cost_of(
    servers: Servers, client: httpx.AsyncClient, answer: Callable[[], Awaitable[None]], tokens: int, gap: float
) -> Cost:
    before = servers.batches()
    await servers.counts(client, servers.a, reset=True)
    servers.reply(tokens, gap)
    await answer()
    counts = await servers.settled(client, servers.a)
    new = {key: size for key, size in servers.batches().items() if key not in before}
    return Cost(counts, len(new), sum(new.values()))


async def measure_writes(servers: Servers, client: httpx.AsyncClient) -> list[Row]:
    async def chat(recorded: bool) -> None:
        headers = RESUMABLE if recorded else {}
        await read_stream(
            client, "POST", f"{servers.a}/v1/chat/completions", responses=False, body=chat_body(), headers=headers
        )

    async def responses(recorded: bool) -> None:
        if recorded:
            await read_stream(client, "POST", f"{servers.a}/v1/responses", responses=True, body=responses_body())
        else:
            reply = await client.post(f"{servers.a}/v1/responses", json=responses_body(stream=False), headers=AUTH)
            if reply.status_code != 200:
                raise RuntimeError(f"POST /v1/responses answered {reply.status_code}: {reply.text[:300]}")

    rows = []
    paces = (("fast", ANSWER_TOKENS, 0.0), (f"{PACE:g} tokens/s", PACED_TOKENS, 1 / PACE))
    for api, run, plain_label in (
        ("chat", chat, "plain stream (no X-Threadline-Resumable)"),
        ("Responses", responses, "the same response not streamed (stored)"),
    ):
        for pace, tokens, gap in paces:
            recorded = await cost_of(servers, client, partial(run, True), tokens, gap)
            plain = await cost_of(servers, client, partial(run, False), tokens, gap)
            say(
                f"resumable: {api} {pace}, {tokens} tokens: recorded {recorded.counts.calls}, "
                f"{recorded.counts.write_units:g} WCU, {recorded.batches} batches {recorded.batch_bytes} B; "
                f"plain {plain.counts.calls}, {plain.counts.write_units:g} WCU"
            )
            paced = gap > 0
            cost = PerThousand(recorded, plain, ANSWER_TOKENS / tokens)
            measured = f"{tokens} tokens" + (
                f", the recording's part x{cost.scale:g}" if tokens != ANSWER_TOKENS else ""
            )
            rows.append(
                Row(
                    f"Resumable {api} answer: DynamoDB writes per 1,000-token answer, model at {pace} ({measured})",
                    cost.text(),
                    f"{plain_label}: {plain_text(plain)}",
                    f"{cost.writes - plain.counts.writes:+.0f} writes, "
                    f"{cost.units - plain.counts.write_units:+.0f} WCU",
                    f"<= {GOAL_WRITES} writes" if paced else "-",
                    verdict(cost.writes <= GOAL_WRITES if paced else None),
                )
            )
    return rows


# --------------------------------------------------------------------------- 2. followers


@dataclass
class Following:
    other: list[float] = field(default_factory=list)
    same: list[float] = field(default_factory=list)
    other_queries: int = 0
    answer_seconds: float = 0.0


async def follow_once(servers: Servers, client: httpx.AsyncClient, result: Following) -> None:
    servers.reply(LIVE_TOKENS, 1 / PACE)
    await servers.counts(client, servers.b, reset=True)
    opened: asyncio.Future[Trace] = asyncio.get_running_loop().create_future()
    original = asyncio.create_task(
        read_stream(
            client,
            "POST",
            f"{servers.a}/v1/chat/completions",
            responses=False,
            body=chat_body(),
            headers=RESUMABLE,
            on_open=opened.set_result,
        )
    )
    session = (await opened).headers[SESSION_HEADER]
    path = f"/v1/sessions/{session}/stream?after=0"
    followers = [
        asyncio.create_task(read_stream(client, "GET", server + path, responses=False))
        for server in (servers.b, servers.a)
    ]
    first, other, same = await asyncio.gather(original, *followers)
    result.answer_seconds += first.events[-1][1] - first.events[0][1]
    result.other_queries += (await servers.settled(client, servers.b)).calls.get("Query", 0)
    for follower, into in ((other, result.other), (same, result.same)):
        arrived = {seq: at for seq, at, _content in follower.events}
        if len(follower.events) != len(first.events):
            raise RuntimeError(f"a follower got {len(follower.events)} chunks, the original {len(first.events)}")
        for seq, at, content in first.events:
            if content and at > follower.opened:
                into.append(ms(arrived[seq] - at))


async def measure_followers(servers: Servers, client: httpx.AsyncClient) -> list[Row]:
    result = Following()
    runs = reps(5, 2)
    for number in range(runs):
        await follow_once(servers, client, result)
        say(f"resumable: follower run {number + 1}/{runs} done")
    other, same = result.other, result.same
    say(
        f"resumable: follower in another process: median {median(other):.1f} p90 {percentile(other, 90):.1f} "
        f"max {max(other, default=math.nan):.1f} ms; same process: median {median(same):.2f} ms; "
        f"{result.other_queries} Queries over {result.answer_seconds:.1f} s of answers"
    )
    detail = f"{runs} chat answers x {LIVE_TOKENS} tokens at {PACE:g}/s, {len(other)} deltas"
    return [
        Row(
            f"Resumable chat: follower in another process (reads the store), added latency per delta ({detail})",
            f"median {fmt_ms(median(other))}, p90 {fmt_ms(percentile(other, 90))}",
            f"original client: 0; same-process follower: median {fmt_ms(median(same))}, "
            f"p90 {fmt_ms(percentile(same, 90))}",
            f"{median(other) - median(same):+.0f} ms over the same-process follower",
            f"<= flush + poll ({GOAL_FOLLOWER_MS} ms) at the median",
            verdict(median(other) <= GOAL_FOLLOWER_MS),
        ),
        Row(
            "Resumable chat: DynamoDB reads of a follower in another process (Query per second of answer)",
            f"{result.other_queries / result.answer_seconds:.1f} Query/s",
            f"poll interval {POLL_MS} ms: at most {1000 / POLL_MS:.0f}/s",
            f"{result.other_queries} Queries over {result.answer_seconds:.1f} s",
            "-",
            "info",
        ),
    ]


# --------------------------------------------------------------------------- 3. reconnect


async def reconnect_once(
    servers: Servers, client: httpx.AsyncClient, *, responses: bool, live: bool, drop_after: int
) -> float:
    servers.reply(LIVE_TOKENS, 1 / PACE if live else 0.0)
    seen = len(servers.upstream.chat_requests)
    if responses:
        dropped = await read_stream(
            client, "POST", f"{servers.a}/v1/responses", responses=True, body=responses_body(), drop_after=drop_after
        )
        last = dropped.events[-1][0]
        url = f"{servers.b}/v1/responses/{dropped.response_id}?stream=true&starting_after={last}"
        wanted, first = last + 1, 0
    else:
        dropped = await read_stream(
            client,
            "POST",
            f"{servers.a}/v1/chat/completions",
            responses=False,
            body=chat_body(),
            headers=RESUMABLE,
            drop_after=drop_after,
        )
        count = len(dropped.events)
        url = f"{servers.b}/v1/sessions/{dropped.headers[SESSION_HEADER]}/stream?after={count}"
        wanted, first = count, count
    if not live:
        await asyncio.to_thread(servers.upstream.wait_for_requests(seen + 1)[seen].wait_done, 30)
        await servers.settled(client, servers.a)  # the run's last batch is written
    resumed = await read_stream(client, "GET", url, responses=responses, first=first)
    if not resumed.events or resumed.events[0][0] != wanted:
        raise RuntimeError(f"resumed at {resumed.events[:1]}, wanted event {wanted}")
    return ms(resumed.arrival(wanted) - resumed.sent)


async def plain_first_token(servers: Servers, client: httpx.AsyncClient, *, responses: bool) -> float:
    servers.reply(LIVE_TOKENS, 0.0)
    if responses:
        trace = await read_stream(
            client, "POST", f"{servers.b}/v1/responses", responses=True, body={**responses_body(), "store": False}
        )
    else:
        trace = await read_stream(client, "POST", f"{servers.b}/v1/chat/completions", responses=False, body=chat_body())
    return ms(trace.first_content() - trace.sent)


async def measure_reconnects(servers: Servers, client: httpx.AsyncClient) -> list[Row]:
    runs = reps(10, 3)
    draw = random.Random(13)  # noqa: S311 (drop points, not secrets)
    rows = []
    for api, responses in (("chat", False), ("Responses", True)):
        finished: list[float] = []
        live: list[float] = []
        plain: list[float] = []
        for _ in range(runs):
            finished.append(
                await reconnect_once(
                    servers, client, responses=responses, live=False, drop_after=draw.randint(*DROP_AFTER)
                )
            )
            live.append(
                await reconnect_once(
                    servers, client, responses=responses, live=True, drop_after=draw.randint(*DROP_AFTER)
                )
            )
            plain.append(await plain_first_token(servers, client, responses=responses))
        say(f"resumable: {api} reconnect: finished {finished}, live {live}, plain first token {plain}")
        resume = "after=N" if not responses else "starting_after=N"
        plain_label = "a new plain stream's first token" + (" (store: false)" if responses else "")
        rows += [
            Row(
                f"Resumable {api}: reconnect ({resume}) to another process -> first missed event, finished answer "
                f"(replay; {runs} runs)",
                f"median {fmt_ms(median(finished))}",
                f"{plain_label}: {fmt_ms(median(plain))}",
                f"{median(finished) / median(plain):.2f}x",
                f"<= {GOAL_RECONNECT_MS} ms at the median",
                verdict(median(finished) <= GOAL_RECONNECT_MS),
            ),
            Row(
                f"Resumable {api}: reconnect ({resume}) to another process -> first missed event, live answer "
                f"({LIVE_TOKENS} tokens at {PACE:g}/s, dropped after {DROP_AFTER[0]}-{DROP_AFTER[1]} events; "
                f"{runs} runs)",
                f"median {fmt_ms(median(live))}",
                f"{plain_label}: {fmt_ms(median(plain))}",
                f"{median(live) / median(plain):.2f}x",
                "-",
                "info",
            ),
        ]
    return rows


# --------------------------------------------------------------------------- the run


def run(lab: Lab) -> list[Row]:
    from tests.fakes.openai_upstream import FakeUpstream, text

    table = lab.new_table("resumable")
    work = lab.work / "resumable"
    work.mkdir()
    with FakeUpstream(default_reply=text("unscripted")) as upstream:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))},
            **lab.env(
                table,
                MODEL_PROVIDER="openai",
                MODELS=MODEL,
                OPENAI_BASE_URL=upstream.base_url,
                OPENAI_API_KEY="sk-bench",
                STREAM_FLUSH_MS=str(FLUSH_MS),
                STREAM_POLL_MS=str(POLL_MS),
            ),
            "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
        }
        app = "bench.resumable_server:app"
        with (
            UvicornProcess(env, work / "a.log", app=app) as a,
            UvicornProcess(env, work / "b.log", app=app) as b,
        ):
            servers = Servers(a.url, b.url, upstream, table, lab)

            async def everything() -> list[Row]:
                limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
                async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                    for server in (servers.a, servers.b):  # unmeasured: connections, imports, the SDK client
                        servers.reply(5, 0.0)
                        await read_stream(
                            client,
                            "POST",
                            f"{server}/v1/chat/completions",
                            responses=False,
                            body=chat_body(),
                            headers=RESUMABLE,
                        )
                        servers.reply(5, 0.0)
                        await read_stream(
                            client, "POST", f"{server}/v1/responses", responses=True, body=responses_body()
                        )
                    rows = await measure_writes(servers, client)
                    rows += await measure_followers(servers, client)
                    rows += await measure_reconnects(servers, client)
                    return rows

            return asyncio.run(everything())
