"""`make coldstart`: what bytecode in the package is worth at a cold start, measured here.

Builds the function's package for this machine's architecture and one Python
(`--runtime python3.11|python3.12|python3.13`; the package's bytecode is written, and
the starts are run, by a CPython of that version found as `make build` finds it:
pyenv's 3.12.1 and 3.13.0 on this project's machines), in three variants, each zipped as `sam deploy` zips it (every
file dated 1980-01-01) and unzipped as Lambda does, then started N times as a fresh
process through `exec-wrapper` on the bare interpreter (no virtualenv), with
`PYTHONDONTWRITEBYTECODE=1` standing in for Lambda's read-only `/var/task`:

- `unchecked-hash .pyc` - what `make build` ships;
- `no .pyc`             - what a build without the function's Python would ship (it now refuses);
- `timestamp .pyc`      - pip's/compileall's default mode, which the zip's 1980 dates
                          make stale, so Python ignores the files.

Each start serves one event against the local Runtime API, timed from the process's
start: `GET /health` (import the app, serve one request), then a streamed chat turn
on DynamoDB Local (adds boto3, the DynamoDB client, a Query and a TransactWriteItems).
The cells take turns (one start of each, then again), so a busy machine slows them
alike. Prints, in ms, the median time to the first `/next` (init: importing the app)
and the median, min and max time to the end of the response. This machine is not a Lambda
(different CPU, no Firecracker): the ratios carry over, the absolute numbers not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "src", ROOT, ROOT / "deploy"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import build_function  # noqa: E402

from tests.e2e.events import chat_body, rest_event  # noqa: E402
from tests.e2e.fake_runtime_api import FakeRuntimeAPI  # noqa: E402

ZIP_EPOCH = time.mktime((1980, 1, 1, 0, 0, 0, 0, 0, -1))
KEY = "coldstart-key"


def zip_round_trip(source: Path, target: Path) -> None:
    archive = target.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(str(path.relative_to(source)))  # date: 1980-01-01, as SAM's
                info.create_system = 3
                info.external_attr = path.stat().st_mode << 16
                zipped.writestr(info, path.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            path = target / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zipped.read(info))
            path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
            os.utime(path, (ZIP_EPOCH, ZIP_EPOCH))
    archive.unlink()


def variants(base: Path, work: Path, python: str) -> dict[str, Path]:
    plain = work / "plain"
    shutil.copytree(base, plain, ignore=shutil.ignore_patterns("__pycache__"))
    stamped = work / "stamped"
    shutil.copytree(plain, stamped)
    subprocess.run(  # noqa: S603
        [python, "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "timestamp", str(stamped)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result = {}
    for name, source in (("unchecked-hash .pyc", base), ("no .pyc", plain), ("timestamp .pyc", stamped)):
        target = work / ("zipped-" + name.split()[0].replace(".", ""))
        zip_round_trip(source, target)
        result[name] = target
    return result


def bare_python() -> str:
    return str(Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def runtime_python(runtime: str) -> str:
    """The interpreter that plays Lambda's for `runtime`: a CPython of that version without
    the project's virtualenv (the package must bring everything). Exits when none is here."""
    version = runtime.removeprefix("python")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return bare_python()
    return build_function.find_interpreter(version).path


def one_start(
    task_root: Path, env: dict[str, str], chat: bool, python: str | None = None, event: dict[str, Any] | None = None
) -> tuple[float, float]:
    """(init ms: start to the first /next, total ms: start to the end of the response).
    `event` replaces the default one (a streamed echo chat turn, or `GET /health`)."""
    with FakeRuntimeAPI() as api:
        run_env = {
            **env,
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "LAMBDA_TASK_ROOT": str(task_root),
        }
        if event is None and chat:
            event = rest_event(
                "POST", "/v1/chat/completions", chat_body("cold start"), headers={"Authorization": f"Bearer {KEY}"}
            )
        elif event is None:
            event = rest_event("GET", "/health")
        invocation = api.queue(event)
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603
            [
                str(task_root / "handler" / "streaming" / "exec-wrapper"),
                python or bare_python(),
                "/var/runtime/bootstrap.py",
            ],
            env=run_env,
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api.wait(invocation, timeout=60)
            ended = max(chunk.at for chunk in invocation.response.chunks) if invocation.response else time.monotonic()
            if invocation.response is None or invocation.response.split()[0]["statusCode"] != 200:
                raise RuntimeError(f"the runtime did not serve the event: {invocation.error}")
            assert invocation.taken_at is not None
            return (invocation.taken_at - started) * 1000, (ended - started) * 1000
        finally:
            api.close()
            process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--runtime",
        default=os.environ.get("LAMBDA_RUNTIME", "python3.11"),
        help="one runtime, or several comma-separated (python3.11,python3.12,python3.13): their cells take turns",
    )
    parser.add_argument(
        "--variants", default="unchecked-hash,no,timestamp", help="which packages: unchecked-hash, no, timestamp"
    )
    args = parser.parse_args(argv)
    architecture = {"x86_64": "x86_64", "aarch64": "arm64"}[os.uname().machine]
    runtimes = [runtime.strip() for runtime in args.runtime.split(",") if runtime.strip()]
    pythons = {runtime: runtime_python(runtime) for runtime in runtimes}
    wanted = {variant.strip().split()[0] for variant in args.variants.split(",")}

    from core.store.client import get_dynamodb_client
    from core.store.dynamodb import ensure_table
    from devtools.dynamodb_local import DynamoDBLocal, dummy_aws_environment

    with tempfile.TemporaryDirectory(prefix="threadline-coldstart-") as tmp, DynamoDBLocal() as database:
        work = Path(tmp)
        packages: dict[tuple[str, str], Path] = {}
        for runtime in runtimes:
            print(f"building the package for {runtime} on {architecture} ...", flush=True)
            with open(os.devnull, "w") as quiet:
                stdout = sys.stdout
                sys.stdout = quiet
                try:
                    build_function.build(work / runtime / "built", runtime, architecture)
                finally:
                    sys.stdout = stdout
            built = variants(work / runtime / "built", work / runtime, pythons[runtime])
            packages.update({(runtime, name): path for name, path in built.items() if name.split()[0] in wanted})

        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LAMBDA_"))}
        env.update(dummy_aws_environment(database.endpoint))
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": "threadline-coldstart",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
                "PYTHONDONTWRITEBYTECODE": "1",
                "MODEL_PROVIDER": "echo",
                "API_KEYS": KEY,
                "SESSIONS_TABLE": "coldstart-sessions",
            }
        )
        saved = dict(os.environ)
        os.environ.update(env)
        get_dynamodb_client.cache_clear()
        ensure_table(get_dynamodb_client(), "coldstart-sessions")
        os.environ.clear()
        os.environ.update(saved)

        shown = ", ".join(f"{runtime}: {python}" for runtime, python in pythons.items())
        print(f"{args.runs} fresh processes per cell, bare interpreters ({shown}), PYTHONDONTWRITEBYTECODE=1; ms")
        print(f"(the cells take turns, so a busy machine slows them alike; load average {os.getloadavg()[0]:.1f})")
        cells = [(key, chat) for key in packages for chat in (False, True)]
        for key, chat in cells:  # warm the OS file cache: measure Python, not the disk
            one_start(packages[key], env, chat, pythons[key[0]])
        runs: dict[tuple[tuple[str, str], bool], list[tuple[float, float]]] = {cell: [] for cell in cells}
        for _ in range(args.runs):
            for key, chat in cells:
                runs[(key, chat)].append(one_start(packages[key], env, chat, pythons[key[0]]))
        print(
            f"{'runtime':11} {'package':20} {'first event':16} {'init median':>11} {'done median':>11} "
            f"{'done min':>9} {'max':>6}"
        )
        for ((runtime, name), chat), results in runs.items():
            inits = [init for init, _ in results]
            totals = [total for _, total in results]
            label = "chat + DynamoDB" if chat else "GET /health"
            print(
                f"{runtime:11} {name:20} {label:16} {statistics.median(inits):11.0f} "
                f"{statistics.median(totals):11.0f} {min(totals):9.0f} {max(totals):6.0f}"
            )
        print(f"(load average at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
