"""A warm turn: in-process requests, `echo` without delay, the store on DynamoDB Local.

Continued turns (with `X-Hermes-Session-Id`, on one session that grows past the
history window) and stateless turns (the same body without the header, so each
creates a session) take turns, after a warm-up of both; p50 and p99 of each, and
the DynamoDB calls each turn made (counted on the client's `before-call` event).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from bench.common import Lab, Row, median, ms, percentile, ratio_row, reps, say
from bench.inprocess import READS, SESSION_HEADER, WRITES, InProcessApp, in_process_app

WARM_UP = 20


def per_turn(calls: list[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for turn in calls:
        total.update(turn)
    return {name: count / len(calls) for name, count in sorted(total.items())}


def describe(average: dict[str, float]) -> str:
    reads = sum(count for name, count in average.items() if name in READS)
    writes = sum(count for name, count in average.items() if name in WRITES)
    detail = ", ".join(f"{name} {count:g}" for name, count in average.items()) or "none"
    return f"{reads:g} read + {writes:g} write ({detail})"


async def measure(
    app: InProcessApp, turns: int
) -> tuple[list[float], list[float], list[Counter[str]], list[Counter[str]]]:
    first = await app.turn("start a session")
    session = first.response.headers[SESSION_HEADER]
    for i in range(WARM_UP):
        await app.turn(f"warm-up {i}", session)
        await app.turn(f"warm-up {i}")
    continued: list[float] = []
    stateless: list[float] = []
    continued_calls: list[Counter[str]] = []
    stateless_calls: list[Counter[str]] = []
    for i in range(turns):
        timed = await app.turn(f"turn {i}: how is it going?", session)
        continued.append(ms(timed.seconds))
        continued_calls.append(timed.calls)
        timed = await app.turn(f"turn {i}: how is it going?")
        stateless.append(ms(timed.seconds))
        stateless_calls.append(timed.calls)
    return continued, stateless, continued_calls, stateless_calls


async def run_async(lab: Lab) -> list[Row]:
    turns = reps(500, 60)
    table = lab.new_table("warm")
    async with in_process_app(lab, table) as app:
        continued, stateless, continued_calls, stateless_calls = await measure(app, turns)
    say(
        f"warm turn: continued p50 {median(continued):.2f} ms p99 {percentile(continued, 99):.2f} ms; "
        f"stateless p50 {median(stateless):.2f} ms p99 {percentile(stateless, 99):.2f} ms"
    )
    ours = per_turn(continued_calls)
    base = per_turn(stateless_calls)
    reads = sum(count for name, count in ours.items() if name in READS)
    writes = sum(count for name, count in ours.items() if name in WRITES)
    exact = ours.get("Query", 0) == 1 and ours.get("TransactWriteItems", 0) == 1 and reads == 1 and writes == 1
    n = f"{turns} turns each, interleaved"
    return [
        ratio_row(
            f"Warm turn p50, continued session (echo, DynamoDB Local, in-process; {n})",
            median(continued),
            "stateless path (no session header)",
            median(stateless),
            goal=None,
        ),
        ratio_row(
            f"Warm turn p99, continued session ({n})",
            percentile(continued, 99),
            "stateless path",
            percentile(stateless, 99),
            goal=None,
        ),
        Row(
            f"DynamoDB calls per continued turn (average of {turns})",
            describe(ours),
            f"stateless path: {describe(base)}",
            f"{reads - sum(c for n, c in base.items() if n in READS):+g} read, "
            f"{writes - sum(c for n, c in base.items() if n in WRITES):+g} write",
            "1 read + 1 write",
            "PASS" if exact else "MISS",
        ),
    ]


def run(lab: Lab) -> list[Row]:
    return asyncio.run(run_async(lab))
