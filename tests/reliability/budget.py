"""How long the fuzzers run: bounded and derandomized in `make test`, long in `make fuzz`.

`FUZZ_EXAMPLES=N` sets the examples per fuzz test (per operation, per route);
`FUZZ_RANDOM=1` draws a new seed each run (Hypothesis prints it with a failure,
to replay with `--hypothesis-seed`). Unset, each test runs its own default number of
examples, the same ones every run.
"""

from __future__ import annotations

import os

RANDOM = os.environ.get("FUZZ_RANDOM", "") not in ("", "0")


def examples(default: int) -> int:
    """`FUZZ_EXAMPLES` when set, else the test's own bounded default."""
    return int(os.environ.get("FUZZ_EXAMPLES") or default)
