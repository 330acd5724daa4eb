"""Partition share: the hottest partition's share of the writes in any second, for one
principal with 1,000 active sessions, on DynamoDB Local (`devtools.partitions`).

Both key designs run in the same process on the same DynamoDB Local: the earlier one
(the head carries the owner index keys and rewrites them at every turn) as the
baseline, the current one (a sharded listing entry moved at most once per interval).
Every session starts within the first 2 simulated seconds and then makes a turn every
1 to 3 simulated seconds, 20 turns each: 20,000 turns per design (6,000 under
BENCH_QUICK=1). The share is measured over the seconds when every session is active
(after the last one started, before the first one ended).
"""

from __future__ import annotations

import asyncio

from bench.common import Lab, Row, reps, say, verdict

SESSIONS = 1000
GOAL = 0.01


async def run_async(lab: Lab) -> list[Row]:
    from devtools.partitions import SimulationResult, simulate

    turns = reps(20, 6)
    results: dict[str, SimulationResult] = {}
    for design in ("earlier", "current"):
        table = lab.new_table(f"partitions-{design}")
        results[design] = await simulate(
            lab.client(), table, design=design, sessions=SESSIONS, turns_per_session=turns, ramp_seconds=2.0
        )
        result = results[design]
        say(
            f"partitions ({design}): {result.turns:,} turns in {result.wall_seconds:.0f} s, "
            f"steady {result.steady.describe()}, overall {result.overall.describe()}, "
            f"index writes per turn {result.index_writes_per_turn:.3f}, listing ordered: {result.listing_ordered}"
        )
    earlier, current = results["earlier"], results["current"]
    label = f"{SESSIONS:,} active sessions of one principal, {current.turns:,} turns"
    hottest = "owner index" if current.steady.worst_partition.startswith("gsi1:") else "a session"
    return [
        Row(
            f"Hottest partition's share of a second's writes ({label})",
            f"{current.steady.worst:.2%} ({hottest})",
            f"earlier design: {earlier.steady.worst:.2%} (owner index)",
            f"{earlier.steady.worst / current.steady.worst:.0f}x less",
            f"<= {GOAL:.0%}, listing complete and newest first",
            verdict(current.steady.worst <= GOAL and current.listing_ordered),
        ),
        Row(
            f"Owner-index writes per turn ({label})",
            f"{current.index_writes_per_turn:.3f}",
            f"earlier design: {earlier.index_writes_per_turn:.3f}",
            f"{current.index_writes_per_turn / earlier.index_writes_per_turn:.2f}x",
            "-",
            "info",
        ),
    ]


def run(lab: Lab) -> list[Row]:
    return asyncio.run(run_async(lab))
