"""Session length: a turn on a session of 10,000 stored messages against one of 10.

Sessions are seeded straight through the store (`DynamoDBSessionStore.append` with
`fresh_session=True`, which writes a long turn in several transactions before the
head commits it). Each timed turn on the short side goes to a session of its own, so
every one of them really continues a 10-message session; the long side continues one
10,000-message session (it grows by two messages a turn, which is nothing beside
10,000). Turns alternate between the sides, after a warm-up; p50 of each.

A third side, sessions of exactly `HISTORY_WINDOW` (40) messages, shows where the
cost stops growing: a read is one Query of window + 1 items however long the session.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import API_KEY, Lab, Row, median, ms, ratio_row, reps, say
from bench.inprocess import InProcessApp, in_process_app

SHORT = 10
LONG = 10_000
WINDOW = 40
GOAL_RATIO = 1.2
WARM_UP = 10


def seed_messages(count: int, tag: str) -> list[dict[str, str]]:
    """Alternating user and assistant messages of a realistic size (~300 bytes)."""
    filler = "This is a stored message of an ordinary conversation, long enough to look like one. " * 3
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{tag} message {i}: {filler}"} for i in range(count)
    ]


async def seed(table: str, sessions: dict[str, int]) -> None:
    from core.store.base import NewTurn, SessionKey
    from core.store.dynamodb import DynamoDBSessionStore
    from handler.auth import principal_id

    store = DynamoDBSessionStore(table, ttl_days=30)
    owner = principal_id(API_KEY)
    for session_id, count in sessions.items():
        turn = NewTurn(messages=seed_messages(count, session_id), system=[], title=f"seeded {session_id}")
        await store.append(SessionKey(owner, session_id), turn, None, fresh_session=True)


async def timed_turns(app: InProcessApp, sessions: list[str], text: str) -> list[float]:
    return [ms((await app.turn(f"{text} {i}", session)).seconds) for i, session in enumerate(sessions)]


async def run_async(lab: Lab) -> list[Row]:
    turns = reps(150, 30)
    table = lab.new_table("length")
    started = time.monotonic()
    long_ids = ["long"]
    short_ids = [f"short-{i}" for i in range(turns + WARM_UP)]
    window_ids = [f"window-{i}" for i in range(turns + WARM_UP)]
    await seed(table, {session: LONG for session in long_ids})
    await seed(table, {session: SHORT for session in short_ids})
    await seed(table, {session: WINDOW for session in window_ids})
    say(
        f"session length: seeded {len(long_ids)} x {LONG:,} + {len(short_ids)} x {SHORT} "
        f"+ {len(window_ids)} x {WINDOW} messages in {time.monotonic() - started:.1f} s"
    )
    short: list[float] = []
    long: list[float] = []
    window: list[float] = []
    async with in_process_app(lab, table, history_window=WINDOW) as app:
        for i in range(WARM_UP):
            await app.turn("warm-up", short_ids[turns + i])
            await app.turn("warm-up", window_ids[turns + i])
            await app.turn("warm-up", long_ids[0])
        for i in range(turns):
            short.append(ms((await app.turn(f"short turn {i}", short_ids[i])).seconds))
            long.append(ms((await app.turn(f"long turn {i}", long_ids[0])).seconds))
            window.append(ms((await app.turn(f"window turn {i}", window_ids[i])).seconds))
    say(
        f"session length: p50 {SHORT}: {median(short):.2f} ms, {WINDOW}: {median(window):.2f} ms, "
        f"{LONG:,}: {median(long):.2f} ms"
    )
    n = f"p50 of {turns} turns each; HISTORY_WINDOW={WINDOW}"
    return [
        ratio_row(
            f"Session length: a turn on {LONG:,} stored messages ({n})",
            median(long),
            f"on {SHORT} messages",
            median(short),
            goal=GOAL_RATIO,
        ),
        ratio_row(
            f"Session length: {LONG:,} against a full window ({n})",
            median(long),
            f"on {WINDOW} messages (= the window)",
            median(window),
            goal=None,
        ),
    ]


def run(lab: Lab) -> list[Row]:
    return asyncio.run(run_async(lab))
