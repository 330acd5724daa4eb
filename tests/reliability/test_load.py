"""Load on loopback, bounded: 50 concurrent clients x 20 turns over 10 sessions, nothing lost.

A real uvicorn server (`LiveServer`) on DynamoDB Local with the echo model (no delay).
50 clients (one `httpx.AsyncClient` each, half streaming, half buffered) run at once;
each makes 20 turns one after the other on its session, five clients per session.
Every user text is unique and the echo reply quotes it, so each stored reply can be
matched to its question. Afterwards every session is read back through
`GET /v1/sessions/{id}/messages` and must hold exactly its 100 turns: 200 messages,
`seq` 0..199 without a gap, each user message followed at once by its own reply, no
duplicate, and each client's turns in the order that client made them.

Errors: a turn must not fail. The one answer a client may retry is the contract's
"nothing was stored, retry" (a 503 `service_unavailable`, or that error as the last
frame of a stream): the official SDKs retry a 503 twice by themselves, and these
clients do the same, at most twice, and the count is reported (the store queues a
process's turns on one session and retries conflicts until a deadline, so none is
expected: see `test_twenty_writers_on_one_session_all_land_without_a_503`); the
read-back proves that each such 503 stored nothing (no duplicate turn).

Only correctness is asserted. Throughput and latency (per turn as its client saw it,
retries included) are reported (printed and in the
"Threadline reliability" summary): the client and the server share this process and
its two cores, so the figures describe this machine, not a deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.reliability.contract import sse_frames
from tests.servers import LiveServer

pytestmark = pytest.mark.integration

HEADER = "X-Hermes-Session-Id"
CLIENTS = 50
TURNS = 20
SESSIONS = 10
BOUND_SECONDS = 100
CLIENT_RETRIES = 2
"""Retries of a 503 "nothing was stored" per turn, as the official SDKs make by default."""


class NothingStored(Exception):
    """The contract's retryable answer: a 503 service_unavailable, before or inside the stream."""


def session_of(client: int) -> str:
    return f"load-{client % SESSIONS}"


def text_of(client: int, turn: int) -> str:
    return f"client-{client:02d} turn-{turn:02d}"


async def one_turn(http: httpx.AsyncClient, client: int, turn: int, stream: bool) -> str:
    """One turn; the reply text, after checking what a client can check on its own."""
    body = {"model": "echo", "stream": stream, "messages": [{"role": "user", "content": text_of(client, turn)}]}
    response = await http.post("/v1/chat/completions", json=body, headers={HEADER: session_of(client)})
    if response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable":
        raise NothingStored
    if response.status_code != 200:
        raise AssertionError(f"status {response.status_code}: {response.text[:300]}")
    if response.headers.get(HEADER) != session_of(client):
        raise AssertionError(f"session header {response.headers.get(HEADER)!r}")
    if not stream:
        return str(response.json()["choices"][0]["message"]["content"])
    frames = sse_frames(response.text)
    if frames[-1] != "[DONE]" and json.loads(frames[-1]).get("error", {}).get("code") == "service_unavailable":
        raise NothingStored
    if frames[-1] != "[DONE]":
        raise AssertionError(f"stream did not end with [DONE]: {frames[-2:]}")
    chunks = [json.loads(frame) for frame in frames[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def read_session(http: httpx.AsyncClient, session: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": "100", **({"after": after} if after else {})}
        page = (await http.get(f"/v1/sessions/{session}/messages", params=params)).json()
        # The raw messages: summaries (compaction) are listed among them, with their own type.
        messages.extend(entry for entry in page["data"] if entry["object"] == "session.message")
        if not page["has_more"]:
            return messages
        after = page["next_cursor"]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def test_fifty_clients_twenty_turns_ten_sessions_nothing_lost_or_interleaved(
    store: DynamoDBSessionStore, caplog: pytest.LogCaptureFixture, report: Callable[[str, str], None]
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.chat")
    settings = Settings(sessions_table=store.table_name)
    app = create_app(ChatService(store, EchoProvider(delay_seconds=0), settings))
    latencies: list[float] = []
    errors: list[str] = []
    retried: list[str] = []

    async def run_client(client: int, http: httpx.AsyncClient) -> None:
        stream = client % 2 == 0
        for turn in range(TURNS):
            started = time.perf_counter()
            try:
                reply = await turn_with_retries(http, client, turn, stream)
            except Exception as error:  # counted, and the client goes on: every error is reported
                errors.append(f"client {client} turn {turn}: {type(error).__name__}: {error}")
                continue
            latencies.append(time.perf_counter() - started)
            if not reply.startswith(f"Echo: {text_of(client, turn)} ("):
                errors.append(f"client {client} turn {turn}: reply {reply!r}")

    async def turn_with_retries(http: httpx.AsyncClient, client: int, turn: int, stream: bool) -> str:
        for _ in range(CLIENT_RETRIES):
            try:
                return await one_turn(http, client, turn, stream)
            except NothingStored:
                retried.append(f"client {client} turn {turn}")
        return await one_turn(http, client, turn, stream)

    with LiveServer(app) as server:
        clients = [httpx.AsyncClient(base_url=server.url, timeout=60) for _ in range(CLIENTS)]
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                started = time.perf_counter()
                await asyncio.gather(*(run_client(c, http) for c, http in enumerate(clients)))
                elapsed = time.perf_counter() - started
                sessions = {s: await read_session(clients[0], f"load-{s}") for s in range(SESSIONS)}
        finally:
            await asyncio.gather(*(http.aclose() for http in clients))

    conflicts = sum(getattr(r, "conflicts", 0) for r in caplog.records if r.name == "threadline.chat")
    turns = CLIENTS * TURNS
    report(
        "load",
        f"load: {CLIENTS} clients x {TURNS} turns over {SESSIONS} sessions (DynamoDB Local, echo model, loopback): "
        f"{turns} turns in {elapsed:.2f} s = {turns / elapsed:.0f} turns/s; latency p50 "
        f"{percentile(latencies, 50) * 1000:.0f} ms, p90 {percentile(latencies, 90) * 1000:.0f} ms, p99 "
        f"{percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"{len(errors)} errors; {conflicts} commit conflicts retried by the store; "
        f"{len(retried)} turns retried by their client after a 503 'nothing was stored'",
    )

    assert errors == [], "\n".join(errors[:20])
    assert len(latencies) == turns
    for index, messages in sessions.items():
        clients_here = [c for c in range(CLIENTS) if c % SESSIONS == index]
        assert_session_holds(f"load-{index}", messages, {c: list(range(TURNS)) for c in clients_here})
    assert sum(len(messages) for messages in sessions.values()) == 2 * turns


def assert_session_holds(session: str, messages: list[dict[str, Any]], turns: dict[int, list[int]]) -> None:
    """Exactly these turns ({client: [turn, ...]}), each whole and adjacent, each client's in
    its own order, no gap in `seq`, nothing duplicated, nothing else."""
    assert len(messages) == 2 * sum(len(t) for t in turns.values()), (session, len(messages))
    assert [m["seq"] for m in messages] == list(range(len(messages))), f"{session}: gap or disorder in seq"
    seen: dict[int, list[int]] = defaultdict(list)
    for position in range(0, len(messages), 2):
        question, answer = messages[position], messages[position + 1]
        assert question["role"] == "user", (session, position, question)
        assert answer["role"] == "assistant", (session, position + 1, answer)
        # Adjacent and its own: the reply right after a question quotes that question.
        assert answer["content"].startswith(f"Echo: {question['content']} ("), (session, position, answer)
        client, turn = (int(part.split("-")[1]) for part in question["content"].split(" "))
        seen[client].append(turn)
    assert dict(seen) == turns, session


WRITERS = 20
WRITER_TURNS = 8


async def test_twenty_writers_on_one_session_all_land_without_a_503(
    store: DynamoDBSessionStore, report: Callable[[str, str], None]
) -> None:
    """Contention beyond any chat client's habit, but within the contract: concurrent turns
    on one session lose nothing. Buffered turns, no client retries."""
    settings = Settings(sessions_table=store.table_name)
    app = create_app(ChatService(store, EchoProvider(delay_seconds=0), settings))
    statuses: dict[int, int] = defaultdict(int)
    landed: dict[int, list[int]] = defaultdict(list)

    async def writer(client: int, http: httpx.AsyncClient) -> None:
        for turn in range(WRITER_TURNS):
            body = {"model": "echo", "messages": [{"role": "user", "content": text_of(client, turn)}]}
            response = await http.post("/v1/chat/completions", json=body, headers={HEADER: "contended"})
            statuses[response.status_code] += 1
            if response.status_code == 200:
                landed[client].append(turn)

    with LiveServer(app) as server:
        clients = [httpx.AsyncClient(base_url=server.url, timeout=60) for _ in range(WRITERS)]
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                started = time.perf_counter()
                await asyncio.gather(*(writer(c, http) for c, http in enumerate(clients)))
                elapsed = time.perf_counter() - started
                messages = await read_session(clients[0], "contended")
        finally:
            await asyncio.gather(*(http.aclose() for http in clients))
    report(
        "contention",
        f"contention: {WRITERS} clients x {WRITER_TURNS} turns on one session in {elapsed:.2f} s; "
        f"statuses {dict(sorted(statuses.items()))}",
    )
    assert_session_holds("contended", messages, dict(landed))  # holds today: a 503 stored nothing
    assert dict(statuses) == {200: WRITERS * WRITER_TURNS}
