"""`python -m bench [NAME ...]`: run the benchmarks (all, or those named) and print one table.

The table (Markdown) goes to stdout and to `.data/bench/latest.md` with the date, the
machine and the run's duration; progress goes to stderr. Exit status 0 whatever the
figures (a MISS is reported, not fatal); 1 if a benchmark could not run (ERROR row).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import traceback
from pathlib import Path

from bench.common import OUTPUT, QUICK, Report, error_row, lab, reps, say

BENCHMARKS = (
    "coldstart",
    "coldstart_deployed",
    "warm",
    "streaming",
    "relay",
    "session_length",
    "compaction",
    "memory",
    "partitions",
    "resumable",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME", help=", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    names: list[str] = args.names or list(BENCHMARKS)
    report = Report()
    say(f"running {', '.join(names)}{' (quick)' if QUICK else ''}")
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp, lab(Path(tmp)) as environment:
        say(f"DynamoDB Local on {environment.endpoint} (in memory)")
        say(f"DynamoDB Local warmed up in {environment.warm_up(reps(400, 100)):.1f} s")
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            try:
                report.rows.extend(module.run(environment))
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                report.rows.append(error_row(name, error))
    table = report.markdown()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(table, encoding="utf-8")
    sys.stdout.write(table)
    say(f"table written to {OUTPUT.relative_to(OUTPUT.parents[2])}")
    return 1 if any(row.result.startswith("ERROR") for row in report.rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
