"""Cold start: a fresh process importing the Lambda entry and serving its first request.

The function's code (`src/core`, `src/handler`) and its runtime dependencies (the
distributions `requirements.txt` pins, with their own dependencies, copied from
`.venv`) go into a temporary folder twice: once without any `.pyc` file, once compiled
with `compileall` (`unchecked-hash`, as `make build` ships them). Each start runs the
bare interpreter (no virtualenv) with `PYTHONPATH` set to one copy and
`PYTHONDONTWRITEBYTECODE=1`, as Lambda's read-only `/var/task` behaves: without `.pyc`
every module of the package is compiled at every start; the standard library keeps
its own `.pyc`, as in Lambda's managed runtime.

A start is timed from `Popen` to the moment the parent reads the child's result line
(`bench/coldstart_child.py`), i.e. interpreter start, imports, the event through the
Mangum handler, and the response; not the interpreter's exit. The cells take turns
(one start of each, then again) after one unmeasured start each, so a busy machine
slows them alike and the OS file cache is warm for all.

The streamed path as deployed (`exec-wrapper` and `handler.streaming` against a local
Runtime API) is measured with `deploy/coldstart.py`'s `one_start`, on the same copies.
"""

from __future__ import annotations

import compileall
import importlib.metadata
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import API_KEY, ROOT, SRC, Lab, Row, median, ratio_row, reps, say

CHILD = Path(__file__).resolve().parent / "coldstart_child.py"
RESULT_PREFIX = "BENCH-RESULT "
START_TIMEOUT_SECONDS = 60
GOAL_RATIO = 1.5


# --------------------------------------------------------------------------- the package


def _requirement_name(spec: str) -> str | None:
    """The distribution a `Requires-Dist` line names, or None when its marker excludes it
    here (an extra, or another Python or platform)."""
    from packaging.requirements import Requirement  # installed with pytest (requirements-dev.txt)

    requirement = Requirement(spec)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        return None
    return str(requirement.name)


def runtime_distributions() -> list[importlib.metadata.Distribution]:
    """The distributions of `requirements.txt` and everything they need, from this environment."""
    wanted = [
        line.split("==")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    found: dict[str, importlib.metadata.Distribution] = {}
    while wanted:
        name = re.sub(r"[-_.]+", "-", wanted.pop()).lower()
        if name in found:
            continue
        distribution = importlib.metadata.distribution(name)
        found[name] = distribution
        for spec in distribution.requires or []:
            needed = _requirement_name(spec)
            if needed is not None:
                wanted.append(needed)
    return list(found.values())


def build_package(target: Path) -> int:
    """The function's code and dependencies in `target`, without bytecode; the file count."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("core", "handler"):
        shutil.copytree(SRC / package, target / package, ignore=ignore)
    count = 0
    for distribution in runtime_distributions():
        for file in distribution.files or []:
            parts = Path(str(file)).parts
            if ".." in parts or "__pycache__" in parts or str(file).endswith(".pyc"):
                continue
            source = Path(str(distribution.locate_file(file)))
            if not source.is_file():
                continue
            destination = target / Path(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
            count += 1
    return count


def compiled_copy(plain: Path, target: Path) -> None:
    shutil.copytree(plain, target)
    compileall.compile_dir(
        str(target), quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )


# --------------------------------------------------------------------------- one start


def load_deploy_coldstart() -> Any:
    """`deploy/coldstart.py` as a module (it is a script in a folder that is not a package)."""
    spec = importlib.util.spec_from_file_location("deploy_coldstart", ROOT / "deploy" / "coldstart.py")
    if spec is None or spec.loader is None:
        raise ImportError("deploy/coldstart.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bare_python() -> str:
    return str(Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


@dataclass
class Cell:
    label: str
    start: Callable[[], tuple[float, dict[str, Any]]]
    """One fresh process: (milliseconds, what it reported)."""
    times: list[float] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.times)


def child_start(scenario: str, event_file: Path, env: dict[str, str], cwd: Path) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603
        [bare_python(), str(CHILD), scenario, str(event_file)],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                elapsed = (time.monotonic() - started) * 1000
                report: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                if report["status"] != 200:
                    raise RuntimeError(f"{scenario} answered {report['status']}")
                return elapsed, report
        _, errors = process.communicate(timeout=START_TIMEOUT_SECONDS)
        raise RuntimeError(f"{scenario} gave no result: {errors.strip()[-400:]}")
    finally:
        try:
            process.communicate(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def with_key(event: dict[str, Any]) -> dict[str, Any]:
    event = json.loads(json.dumps(event))
    event["headers"]["Authorization"] = f"Bearer {API_KEY}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {API_KEY}"]
    return event


# --------------------------------------------------------------------------- the benchmark


def run(lab: Lab) -> list[Row]:
    from tests.e2e.events import rest_event

    runs = reps(11, 3)
    work = lab.work / "coldstart"
    plain, compiled, events = work / "plain", work / "pyc", work / "events"
    for folder in (plain, events):
        folder.mkdir(parents=True)
    started = time.monotonic()
    files = build_package(plain)
    compiled_copy(plain, compiled)
    say(f"cold start: package of {files:,} files copied and compiled in {time.monotonic() - started:.1f} s")

    chat = with_key(json.loads((ROOT / "events" / "rest-chat.json").read_text()))
    models = with_key(json.loads((ROOT / "events" / "rest-models.json").read_text()))
    event_files = {
        "chat": chat,
        "models": models,
        "ping": rest_event("GET", "/ping"),
        "put": rest_event("POST", "/put", {}),
    }
    for name, event in event_files.items():
        (events / f"{name}.json").write_text(json.dumps(event))

    table = lab.new_table("coldstart")
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "VIRTUAL_ENV", "LAMBDA_", "AWS_", "_X_AMZN"))
    }

    def env(package: Path, telemetry: str, **extra: str) -> dict[str, str]:
        return {
            **inherited,
            **lab.env(table),
            "PYTHONPATH": str(package),
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": "threadline-bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "MODEL_PROVIDER": "echo",
            "TELEMETRY": telemetry,
            **extra,
        }

    def child(scenario: str, event: str, package: Path, telemetry: str = "on") -> Callable[[], tuple[float, Any]]:
        return lambda: child_start(scenario, events / f"{event}.json", env(package, telemetry), work)

    deploy_coldstart = load_deploy_coldstart()

    def runtime(package: Path) -> Callable[[], tuple[float, Any]]:
        def start() -> tuple[float, dict[str, Any]]:
            run_env = env(package, "on", API_KEYS=deploy_coldstart.KEY)
            run_env.pop("PYTHONPATH")  # exec-wrapper sets it to the task root
            _init, total = deploy_coldstart.one_start(package, run_env, True)
            return float(total), {}

        return start

    cells = {
        "ours chat pyc": Cell("ours chat pyc", child("ours", "chat", compiled)),
        "ours chat plain": Cell("ours chat plain", child("ours", "chat", plain)),
        "bare pyc": Cell("bare pyc", child("bare", "ping", compiled)),
        "bare plain": Cell("bare plain", child("bare", "ping", plain)),
        "ours models pyc": Cell("ours models pyc", child("ours", "models", compiled)),
        "ours chat off pyc": Cell("ours chat off pyc", child("ours", "chat", compiled, telemetry="off")),
        "floor pyc": Cell("floor pyc", child("floor", "put", compiled)),
        "runtime pyc": Cell("runtime pyc", runtime(compiled)),
        "runtime plain": Cell("runtime plain", runtime(plain)),
    }
    for cell in cells.values():
        cell.start()  # unmeasured: the OS file cache, DynamoDB Local's first requests
    for round_number in range(runs):
        for cell in cells.values():
            elapsed, report = cell.start()
            cell.times.append(elapsed)
            cell.reports.append(report)
        say(f"cold start: round {round_number + 1}/{runs} done")

    c = {name: cell.median for name, cell in cells.items()}
    off_powertools = max(report["powertools_modules"] for report in cells["ours chat off pyc"].reports)
    on_powertools = max(report["powertools_modules"] for report in cells["ours chat pyc"].reports)
    n = f"median of {runs}"
    bare = "bare FastAPI + Mangum, GET JSON"
    rows = [
        ratio_row(
            f"Cold start, chat turn, .pyc (Lambda entry via Mangum; {n})",
            c["ours chat pyc"],
            f"{bare}, .pyc",
            c["bare pyc"],
            goal=GOAL_RATIO,
        ),
        ratio_row(
            f"Cold start, chat turn, no .pyc ({n})",
            c["ours chat plain"],
            f"{bare}, no .pyc",
            c["bare plain"],
            goal=GOAL_RATIO,
        ),
        ratio_row(
            f"Cold start, GET /v1/models, .pyc ({n})",
            c["ours models pyc"],
            f"{bare}, .pyc",
            c["bare pyc"],
            goal=GOAL_RATIO,
        ),
        ratio_row(
            f"Cold start, chat turn against the DynamoDB floor, .pyc ({n})",
            c["ours chat pyc"],
            "bare app + botocore client + 1 PutItem, .pyc",
            c["floor pyc"],
            goal=None,
        ),
        ratio_row(
            f"Cold start, chat turn, TELEMETRY=on against off, .pyc "
            f"(Powertools modules imported: {on_powertools} on, {off_powertools} off; {n})",
            c["ours chat pyc"],
            "ours, TELEMETRY=off, .pyc",
            c["ours chat off pyc"],
            goal=None,
        ),
        ratio_row(
            f"Cold start as deployed (exec-wrapper + streaming runtime), streamed chat turn, .pyc ({n})",
            c["runtime pyc"],
            f"{bare}, .pyc",
            c["bare pyc"],
            goal=GOAL_RATIO,
        ),
        ratio_row(
            f"Cold start as deployed, streamed chat turn, no .pyc ({n})",
            c["runtime plain"],
            f"{bare}, no .pyc",
            c["bare plain"],
            goal=GOAL_RATIO,
        ),
    ]
    for name, cell in cells.items():
        spread = f"min {min(cell.times):.0f}, max {max(cell.times):.0f}"
        parts = ""
        if cell.reports and "import_ms" in cell.reports[0]:
            imports = median([report["import_ms"] for report in cell.reports])
            first = median([report["request_ms"] for report in cell.reports])
            parts = f"; in the process: imports {imports:.0f} ms, first request {first:.0f} ms"
        say(f"cold start: {name}: median {cell.median:.0f} ms ({spread}){parts}")
    return rows
