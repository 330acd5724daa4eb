"""LiteLLM's proxy as an optional anchor of the relay benchmark (`BENCH_LITELLM=1`).

It runs from its own virtualenv, `.venv/litellm` (`make bench-litellm` makes it), never
from the project's: LiteLLM pins much of what the project also uses. It is started with
one model routed to the fake upstream, a master key, `LITELLM_LOCAL_MODEL_COST_MAP=True`
(no download of the cost map at start) and no database.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import ROOT
from bench.streaming import free_port

VENV = ROOT / ".venv" / "litellm"
MASTER_KEY = "sk-bench-master"


def wanted() -> bool:
    return os.environ.get("BENCH_LITELLM", "").strip().lower() in {"1", "on", "true", "yes"}


@dataclass
class Proxy:
    url: str
    pid: int
    headers: dict[str, str]


@contextmanager
def litellm_proxy(upstream_base_url: str, model: str, work: Path) -> Iterator[tuple[Proxy | None, str | None]]:
    """The running proxy, or None and why not."""
    if not wanted():
        yield None, "set BENCH_LITELLM=1"
        return
    executable = VENV / "bin" / "litellm"
    if not executable.exists():
        yield None, f"{executable.relative_to(ROOT)} missing: run `make bench-litellm`"
        return
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream_base_url}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH", "OPENAI_"))},
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_TELEMETRY": "False",
    }
    log = (work / "litellm.log").open("wb")
    command = [
        str(executable),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LiteLLM did not start: {(work / 'litellm.log').read_text()[-500:]}")
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield Proxy(url, process.pid, {"Authorization": f"Bearer {MASTER_KEY}"}), None
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()
