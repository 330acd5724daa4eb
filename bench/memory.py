"""Memory: peak RSS of the warm function after 1,000 turns, and its growth up to 5,000.

Each side runs in a fresh process of its own (`python -m bench.memory --child ...`), so
the figures are that process's alone, read from `/proc/self/status` (`VmHWM`, the peak
resident set, which is what Lambda reports as "Max Memory Used"; and `VmRSS`):

- ours: the function's Lambda entry, `handler.lambda_buffered.handler` (Mangum), called
  in-process as Lambda's runtime calls it, with REST events for non-streamed chat turns:
  `echo` without delay, TELEMETRY on as deployed (its output to /dev/null), the store on
  DynamoDB Local; continued turns spread over five sessions;
- the baseline: the bare FastAPI + Mangum app of the cold-start benchmark, as many
  GET requests on its JSON route.

Growth is the peak's growth from the first checkpoint to the last; the baseline's own
growth over the same requests shows what "noise" is on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import API_KEY, ROOT, SRC, Lab, Row, ratio_row, reps, say, verdict

GOAL_PEAK_MB = 128
NOISE_MB = 1.0
"""Growth within this (or within the baseline's own growth) is noise: 1 MB over 4,000
turns would be a leak of 256 bytes a turn, smaller than one stored message."""
SESSIONS = 5


def status_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MB (1024 x 1024 bytes)."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def child(kind: str, checkpoints: list[int], out: Path) -> None:
    """Serve turns through a Mangum handler, noting memory at each checkpoint."""
    from bench.coldstart_child import Context
    from tests.e2e.events import rest_event

    handler: Any
    if kind == "ours":
        from handler.lambda_buffered import handler
    else:
        from bench.coldstart_child import bare_handler

        handler = bare_handler()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    samples: list[dict[str, Any]] = [{"turns": 0, **status_mb()}]
    started = time.monotonic()
    served = 0
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        for checkpoint in checkpoints:
            while served < checkpoint:
                if kind == "ours":
                    body = {"model": "echo", "messages": [{"role": "user", "content": f"turn {served}: how are you?"}]}
                    headers = {**auth, "X-Hermes-Session-Id": f"memory-{served % SESSIONS}"}
                    event = rest_event("POST", "/v1/chat/completions", body, headers=headers)
                else:
                    event = rest_event("GET", "/ping")
                response = handler(event, Context())
                if response["statusCode"] != 200:
                    raise RuntimeError(f"turn {served} answered {response['statusCode']}: {response['body'][:300]}")
                served += 1
            samples.append({"turns": served, "seconds": time.monotonic() - started, **status_mb()})
    out.write_text(json.dumps(samples))


def run_child(lab: Lab, kind: str, checkpoints: list[int], table: str) -> list[dict[str, Any]]:
    out = lab.work / f"memory-{kind}.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))},
        **lab.env(table),
        "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
        "AWS_LAMBDA_FUNCTION_NAME": "threadline-bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "MODEL_PROVIDER": "echo",
        "TELEMETRY": "on",
    }
    command = [sys.executable, "-m", "bench.memory", "--child", kind, "--out", str(out)]
    command += ["--checkpoints", ",".join(map(str, checkpoints))]
    completed = subprocess.run(  # noqa: S603
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the {kind} process failed: {completed.stderr.strip()[-600:]}")
    samples: list[dict[str, Any]] = json.loads(out.read_text())
    return samples


def run(lab: Lab) -> list[Row]:
    first, last = reps(1000, 200), reps(5000, 1000)
    checkpoints = sorted({first, *range(first, last + 1, first), last})
    table = lab.new_table("memory")
    ours = run_child(lab, "ours", checkpoints, table)
    bare = run_child(lab, "bare", checkpoints, table)
    for name, samples in (("ours", ours), ("bare", bare)):
        curve = ", ".join(f"{s['turns']}: {s['VmHWM']:.1f}/{s['VmRSS']:.1f}" for s in samples)
        say(f"memory: {name} (turns: peak/current MB): {curve}; {samples[-1]['seconds']:.0f} s")

    def at(samples: list[dict[str, Any]], turns: int) -> dict[str, Any]:
        return next(s for s in samples if s["turns"] == turns)

    ours_growth = at(ours, last)["VmHWM"] - at(ours, first)["VmHWM"]
    bare_growth = at(bare, last)["VmHWM"] - at(bare, first)["VmHWM"]
    rss_growth = at(ours, last)["VmRSS"] - at(ours, first)["VmRSS"]
    peak = ratio_row(
        f"Memory: peak RSS (VmHWM) of the warm function after {first:,} chat turns",
        at(ours, first)["VmHWM"],
        f"bare FastAPI + Mangum after {first:,} requests",
        at(bare, first)["VmHWM"],
        goal=None,
        unit="MB",
    )
    peak.goal = f"< {GOAL_PEAK_MB} MB"
    peak.result = verdict(at(ours, first)["VmHWM"] < GOAL_PEAK_MB)
    allowed = max(NOISE_MB, bare_growth)
    return [
        peak,
        Row(
            f"Memory: growth of the peak RSS from {first:,} to {last:,} turns (current RSS: {rss_growth:+.1f} MB)",
            f"{ours_growth:+.1f} MB",
            f"bare FastAPI + Mangum, same span: {bare_growth:+.1f} MB",
            f"{ours_growth - bare_growth:+.1f} MB",
            f"<= {NOISE_MB:g} MB or the baseline's growth",
            verdict(ours_growth <= allowed),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="One side of the memory benchmark (run by bench.memory).")
    parser.add_argument("--child", choices=["ours", "bare"], required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    child(args.child, [int(n) for n in args.checkpoints.split(",")], args.out)


if __name__ == "__main__":
    main()
