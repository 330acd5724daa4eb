"""What every benchmark shares: paths, the environment, DynamoDB Local, rows and the table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
for _path in (SRC, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

OUTPUT = ROOT / ".data" / "bench" / "latest.md"
API_KEY = "bench-key"
"""The one API key every benchmarked app is given (deployed, keys are required)."""

QUICK = os.environ.get("BENCH_QUICK", "").strip().lower() in {"1", "on", "true", "yes"}

DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Dummy credentials and a fixed region: nothing a benchmark starts can sign a real request."""
_UNSET = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "API_KEYS",
    "API_KEYS_SECRET_ARN",
    "MODEL_PROVIDER",
    "MODELS",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "TELEMETRY",
    "AWS_LAMBDA_FUNCTION_NAME",
)


def reps(full: int, quick: int) -> int:
    """A repetition count: `quick` under BENCH_QUICK=1."""
    return quick if QUICK else full


def say(message: str) -> None:
    """Progress goes to stderr; stdout is the table only."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> float:
    return seconds * 1000


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table: a figure beside its baseline from the same run."""

    benchmark: str
    figure: str
    baseline: str
    compared: str
    """The ratio or the difference, as text."""
    goal: str
    result: str
    """PASS, MISS, info (no goal) or ERROR."""


def fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms" if abs(value) >= 10 else f"{value:.2f} ms"


def fmt_mb(value: float) -> str:
    return f"{value:.1f} MB"


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else "PASS" if ok else "MISS"


def ratio_row(
    benchmark: str, figure: float, baseline_label: str, baseline: float, *, goal: float | None, unit: str = "ms"
) -> Row:
    """A row compared as figure / baseline, against an upper bound on that ratio."""
    ratio = figure / baseline if baseline else math.nan
    show = fmt_ms if unit == "ms" else fmt_mb
    return Row(
        benchmark,
        show(figure),
        f"{baseline_label}: {show(baseline)}",
        f"{ratio:.2f}x ({figure - baseline:+,.0f} {unit})" if unit == "ms" else f"{ratio:.2f}x",
        f"<= {goal:g}x" if goal is not None else "-",
        verdict(None if goal is None else ratio <= goal),
    )


def error_row(benchmark: str, error: BaseException) -> Row:
    text = f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")
    return Row(benchmark, "-", "-", "-", "-", f"ERROR ({text[:160]})")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    load: float = field(default_factory=lambda: os.getloadavg()[0])
    """The 1-minute load average when the run began: other work on the machine skews timings."""

    def markdown(self) -> str:
        header = ["#", "Benchmark", "Figure", "Baseline (same run)", "Ratio / difference", "Goal", "Result"]
        lines = [
            f"Date: {self.date}; machine: {machine()}; mode: {'quick (BENCH_QUICK=1)' if QUICK else 'full'}; "
            f"run took {time.monotonic() - self.started:.0f} s; load average at start {self.load:.2f}.",
            "",
            f"Store: {store()}.",
            "",
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in header) + " |",
        ]
        for number, row in enumerate(self.rows, 1):
            cells = [str(number), row.benchmark, row.figure, row.baseline, row.compared, row.goal, row.result]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
        misses = sum(row.result == "MISS" for row in self.rows)
        errors = sum(row.result.startswith("ERROR") for row in self.rows)
        passes = sum(row.result == "PASS" for row in self.rows)
        lines += ["", f"{passes} PASS, {misses} MISS, {errors} ERROR."]
        return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def store() -> str:
    """Which DynamoDB Local and Java the run used."""
    import shutil
    import subprocess

    from devtools.dynamodb_local import jar_dir

    java = shutil.which("java")
    version = "java not found"
    if java is not None:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
        version = (shown.stderr or shown.stdout).splitlines()[0].strip() if (shown.stderr or shown.stdout) else "java"
    return f"DynamoDB Local {jar_dir().name} (in memory), {version}"


def machine() -> str:
    return (
        f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


# --------------------------------------------------------------------------- environment


def dummy_aws_environment() -> None:
    """Dummy AWS credentials and us-east-1 for this process and every child it starts."""
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(DUMMY_AWS)


def reset_cached_clients() -> None:
    from core.aws import botocore_session
    from core.settings import get_settings
    from core.store.client import get_dynamodb_client

    get_settings.cache_clear()
    botocore_session.cache_clear()
    get_dynamodb_client.cache_clear()


@dataclass
class Lab:
    """What the benchmarks run against: one DynamoDB Local (in memory) for the run."""

    endpoint: str
    work: Path
    """A temporary folder for this run, removed at the end."""
    store_pid: int | None = None
    """DynamoDB Local's process (its CPU time is read from /proc)."""

    def env(self, table: str, **extra: str) -> dict[str, str]:
        """The environment of a process serving Threadline on `table` of this DynamoDB Local."""
        return {
            **DUMMY_AWS,
            "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint,
            "SESSIONS_TABLE": table,
            "API_KEYS": API_KEY,
            **extra,
        }

    def new_table(self, prefix: str) -> str:
        """A new, empty sessions table (with its index and TTL, as the template makes it)."""
        from core.store.dynamodb import ensure_table

        name = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
        ensure_table(self.client(), name)
        return name

    def warm_up(self, rounds: int) -> float:
        """Warm DynamoDB Local's JVM (it gets about twice as fast over its first few hundred
        requests) with turns read and appended through the store; the seconds it took."""
        import anyio

        from core.store.base import NewTurn, SessionKey
        from core.store.dynamodb import DynamoDBSessionStore

        started = time.monotonic()
        store = DynamoDBSessionStore(self.new_table("warm-up"), ttl_days=1)
        key = SessionKey("warm-up", "warm-up")
        turn = NewTurn(
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            system=[],
            title="warm-up",
        )

        async def turns() -> None:
            for _ in range(rounds):
                state = await store.load(key, 40)
                await store.append(key, turn, state)

        anyio.run(turns)
        return time.monotonic() - started

    def client(self) -> Any:
        """This process's DynamoDB client (core.store.client's), pointed at DynamoDB Local."""
        from core.store.client import get_dynamodb_client

        if os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") != self.endpoint:
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = self.endpoint
            reset_cached_clients()
        return get_dynamodb_client()


@contextmanager
def lab(work: Path) -> Iterator[Lab]:
    """Start DynamoDB Local in memory on a free port of 127.0.0.1; always stopped."""
    from devtools.dynamodb_local import DynamoDBLocal

    dummy_aws_environment()
    # What the app reads at import (handler.app creates the app from the environment).
    os.environ.update({"API_KEYS": API_KEY, "MODEL_PROVIDER": "echo"})
    with DynamoDBLocal() as database:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = database.endpoint
        reset_cached_clients()
        try:
            pid = database.process.pid if database.process is not None else None
            yield Lab(endpoint=database.endpoint, work=work, store_pid=pid)
        finally:
            reset_cached_clients()
