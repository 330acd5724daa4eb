"""Concurrent turns on one session from many OS processes, as Lambda runs them: each
container its own process, its own DynamoDB client, and no lock shared with anyone.

Only the store's protocol keeps the session whole here: the head's conditional
`next_seq` in every turn's transaction, and retries behind whoever won (issue 9.10).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.store.base import SessionKey, UsageTotals
from core.store.dynamodb import DynamoDBSessionStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
TURNS = 20


def test_eight_processes_on_one_session_store_every_turn_once_and_whole(
    store: DynamoDBSessionStore, tmp_path: Path, report: Callable[[str, str], None]
) -> None:
    go_file = str(tmp_path / "go")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "TELEMETRY": "off"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.turn_worker",
                store.table_name,
                "shared",
                str(n),
                str(TURNS),
                go_file,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f"{go_file}.ready-{n}") for n in range(WORKERS)):
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(worker.poll() is None for worker in workers), [w.stderr.read() for w in workers if w.stderr]
            time.sleep(0.05)
        Path(go_file).touch()  # every process starts its turns at once
        results: list[dict[str, Any]] = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    failures = [f"worker {r['worker']}: {f}" for r in results for f in r["failures"]]
    assert failures == []

    page = asyncio.run(store.list_messages(SessionKey("open", "shared"), limit=1000, after=None))
    assert page is not None
    messages = page.items
    assert [m.seq for m in messages] == list(range(2 * WORKERS * TURNS))  # no gap, no repeat
    questions = [m.message["content"] for m in messages[0::2]]
    answers = [m.message for m in messages[1::2]]
    # Every turn stored once, its question and answer adjacent.
    assert sorted(questions) == sorted(f"w{w}-t{t}" for w in range(WORKERS) for t in range(TURNS))
    for question, answer in zip(questions, answers, strict=True):
        assert answer["role"] == "assistant" and answer["content"].startswith(f"Echo: {question} ("), answer
    # Each process's turns in the order it made them.
    for w in range(WORKERS):
        mine = [q for q in questions if q.startswith(f"w{w}-")]
        assert mine == [f"w{w}-t{t}" for t in range(TURNS)]
    # The session's usage totals: every turn's usage added once, whichever process won.
    head = asyncio.run(store.head(SessionKey("open", "shared")))
    assert head is not None
    assert head.usage == UsageTotals(
        input_tokens=sum(r["tokens"]["input"] for r in results),
        output_tokens=sum(r["tokens"]["output"] for r in results),
        turns=WORKERS * TURNS,
    )

    conflicts = [c for r in results for c in r["conflicts"]]
    report(
        "multiprocess_retries",
        f"{WORKERS} processes x {TURNS} turns on one session: {len(conflicts)} turns stored, "
        f"retries after a lost race: total {sum(conflicts)}, mean {sum(conflicts) / len(conflicts):.1f}, "
        f"max {max(conflicts)} per turn; slowest process {max(r['seconds'] for r in results)} s",
    )
