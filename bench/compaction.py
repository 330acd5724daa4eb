"""Compaction (issue 12), beside the no-compaction path in the same run.

1. **Bounded input at 10,000 messages.** A session seeded with 10,000 messages, then
   turns with compaction on: the largest model input (characters of every message the
   model was sent) stays under a fixed bound (the summary's bound, a full window of
   seeded messages, the new input), whatever the session's length.
2. **A fact from turn 1 at turn 1,000.** Turn 1 states a fact; 998 turns of filler; the
   fact is in what the model receives at turn 1,000, through the summaries, and not in
   its window. The turns' model calls go to the project's fake OpenAI upstream
   (`tests/fakes/openai_upstream.py`, real HTTP), which records every request: the
   figure is read from that record. Summaries are made by the echo model (its
   deterministic summary: the first words of each message), so the run needs no model.
   `BENCH_QUICK=1`: turn 200 instead of 1,000.
3. **A turn that needs no compaction** (10-message sessions) with compaction on costs
   one read and one write, and its p50 latency is within 1.1x of the same turn with
   `COMPACTION=off`, turns alternating between the two apps.

In process (`bench.inprocess`: the ASGI transport returns once the app has finished,
work after the response included, so a turn that compacts is timed with its
compaction; turns of part 3 never compact).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.common import QUICK, Lab, Row, median, ms, ratio_row, reps, say
from bench.inprocess import InProcessApp, in_process_app
from bench.session_length import seed

WINDOW = 40
LONG = 10_000
FACT = "Zorblax is the name of my cat, remember it."
NO_COMPACTION_GOAL = 1.1
WARM_UP = 10


def input_bound() -> int:
    """The most a turn can send the model at any session length: the summary (bounded),
    its framing, a full window of seeded messages (~330 characters each), the input."""
    from core.summary_prompt import MAX_SUMMARY_CHARS

    return MAX_SUMMARY_CHARS + 200 + WINDOW * 400 + 200


def input_chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(message.get("content") or "")) for message in messages)


class Split:
    """Turns to the recording fake upstream (over HTTP, through the openai provider);
    summary requests to the echo model, whose summaries are deterministic."""

    name = "openai"

    def __init__(self, upstream_url: str) -> None:
        from core.providers.echo import EchoProvider
        from core.providers.openai_compat import OpenAIProvider

        self.turns = OpenAIProvider(base_url=upstream_url, api_key="sk-bench", max_retries=0)
        self.summaries = EchoProvider()

    def stream(self, request: Any) -> AsyncIterator[Any]:
        from core.summary_prompt import is_summary_request

        if is_summary_request(request.messages):
            return self.summaries.stream(request)
        return self.turns.stream(request)


async def bounded_input(lab: Lab, upstream: Any, provider: Split) -> list[Row]:
    turns = reps(80, 60)  # the backlog of 10,000 is caught up at 200 messages a turn
    table = lab.new_table("compaction-long")
    started = time.monotonic()
    await seed(table, {"long-on": LONG, "long-off": LONG})
    say(f"compaction: seeded 2 x {LONG:,} messages in {time.monotonic() - started:.1f} s")
    sizes: dict[bool, list[int]] = {True: [], False: []}
    for compaction in (False, True):
        session = "long-on" if compaction else "long-off"
        async with in_process_app(lab, table, history_window=WINDOW, compaction=compaction, provider=provider) as app:
            for i in range(turns):
                upstream.reset()
                await app.turn(f"turn {i} on a long session", session)
                sizes[compaction].append(input_chars(upstream.last.body["messages"]))
    bound = input_bound()
    peak = max(sizes[True])
    say(f"compaction: model input at {LONG:,} messages: max {peak:,} chars with compaction, bound {bound:,}")
    return [
        Row(
            f"Compaction: model input at {LONG:,}+ messages (max of {turns} turns; HISTORY_WINDOW={WINDOW})",
            f"{peak:,} chars",
            f"without compaction: {max(sizes[False]):,} chars (the window only: messages before it unseen)",
            f"{peak / bound:.2f} of the bound",
            f"<= {bound:,} chars",
            "PASS" if peak <= bound else "MISS",
        )
    ]


async def fact_at_turn(lab: Lab, upstream: Any, provider: Split) -> list[Row]:
    turns = 200 if QUICK else 1_000
    table = lab.new_table("compaction-fact")
    started = time.monotonic()
    found: dict[bool, bool] = {}
    in_window = False
    for compaction in (True, False):
        session = "fact-on" if compaction else "fact-off"
        async with in_process_app(lab, table, history_window=WINDOW, compaction=compaction, provider=provider) as app:
            await app.turn(FACT, session)
            for i in range(2, turns):
                await app.turn(f"filler turn {i}, nothing to remember here", session)
            upstream.reset()
            await app.turn("What is the name of my cat?", session)
        sent = upstream.last.body["messages"]
        found[compaction] = any("Zorblax" in str(message.get("content")) for message in sent)
        if compaction:
            in_window = any("Zorblax" in str(m.get("content")) for m in sent if not _is_summary(m))
        if QUICK:
            break  # the no-compaction side only confirms what the window shows
    say(f"compaction: {turns:,} turns with the fact in {time.monotonic() - started:.1f} s; found: {found}")
    baseline = "without compaction: " + (
        ("found" if found[False] else "missing") if False in found else f"missing (outside the window of {WINDOW})"
    )
    ok = found[True] and not in_window
    return [
        Row(
            f"Compaction: a fact from turn 1 in the model's input at turn {turns:,} (recorded by the fake upstream)"
            + (" (BENCH_QUICK: 1,000 in a full run)" if QUICK else ""),
            "found, in the summary" if found[True] and not in_window else ("in the window" if in_window else "missing"),
            baseline,
            "-",
            "found",
            "PASS" if ok else "MISS",
        )
    ]


def _is_summary(message: dict[str, Any]) -> bool:
    return message.get("role") == "system" and str(message.get("content", "")).startswith("Summary of the earlier")


async def no_compaction_needed(lab: Lab) -> list[Row]:
    turns = reps(150, 30)
    table = lab.new_table("compaction-short")
    on_ids = [f"on-{i}" for i in range(turns + WARM_UP)]
    off_ids = [f"off-{i}" for i in range(turns + WARM_UP)]
    await seed(table, {session: 10 for session in on_ids + off_ids})
    on: list[float] = []
    off: list[float] = []
    calls_ok = True
    async with (
        in_process_app(lab, table, history_window=WINDOW, compaction=True) as with_compaction,
        in_process_app(lab, table, history_window=WINDOW, compaction=False) as without,
    ):
        apps: dict[bool, InProcessApp] = {True: with_compaction, False: without}
        for i in range(WARM_UP):
            await apps[True].turn("warm-up", on_ids[turns + i])
            await apps[False].turn("warm-up", off_ids[turns + i])
        for i in range(turns):
            timed = await apps[True].turn(f"turn {i}", on_ids[i])
            calls_ok &= dict(timed.calls) == {"Query": 1, "TransactWriteItems": 1}
            on.append(ms(timed.seconds))
            off.append(ms((await apps[False].turn(f"turn {i}", off_ids[i])).seconds))
    say(f"compaction: p50 of a turn needing none: on {median(on):.2f} ms, off {median(off):.2f} ms")
    return [
        Row(
            f"Compaction on, a turn that needs none: DynamoDB calls ({turns} turns)",
            "1 Query + 1 TransactWriteItems" if calls_ok else "more",
            "COMPACTION=off: 1 Query + 1 TransactWriteItems",
            "-",
            "1 read + 1 write",
            "PASS" if calls_ok else "MISS",
        ),
        ratio_row(
            f"Compaction on, a turn that needs none (p50 of {turns} turns each)",
            median(on),
            "COMPACTION=off",
            median(off),
            goal=NO_COMPACTION_GOAL,
        ),
    ]


async def run_async(lab: Lab) -> list[Row]:
    from tests.fakes.openai_upstream import FakeUpstream, text

    rows = await no_compaction_needed(lab)
    with FakeUpstream(default_reply=text("Noted.")) as upstream:
        provider = Split(upstream.base_url)
        rows += await bounded_input(lab, upstream, provider)
        rows += await fact_at_turn(lab, upstream, provider)
    return rows


def run(lab: Lab) -> list[Row]:
    return asyncio.run(run_async(lab))
