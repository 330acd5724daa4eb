"""Cold start as deployed: the first chat turn with keys from Secrets Manager and an
OpenAI-compatible upstream, against the DynamoDB floor, in the same run.

`bench.coldstart` starts the function with a static `API_KEYS` and the echo model. A
deployment reads its API keys from Secrets Manager (`API_KEYS_SECRET_ARN`, with a
second botocore client, see `core.secrets`) and calls a model: here `MODEL_PROVIDER=
openai` against the project's fake upstream (`tests/fakes/openai_upstream.py`, a real
HTTP server), its key read from a second secret (`OPENAI_API_KEY_SECRET_ARN`) and the
SDK's client created on the first turn, as deployed. The secrets are served by a local
Secrets Manager endpoint (`tests/fakes/secretsmanager_server.py`: moto's backend over
HTTP), reached through botocore's own `AWS_ENDPOINT_URL_SECRETS_MANAGER`.

Each start is the package (`.pyc`, unchecked-hash, as `make build` ships it) run by
`exec-wrapper` and the streaming runtime against a local Runtime API
(`deploy/coldstart.py`'s `one_start`), timed from the process's start: **init** is up
to the first `/next`, **first invocation** from there to the end of the streamed
response. Bedrock is not measured: there is no local Bedrock endpoint.

The floor is `bench/coldstart_child.py floor`: a bare FastAPI + Mangum app that creates
one botocore DynamoDB client and does one PutItem, the least a stateful turn on
DynamoDB can cost; split the same way (imports, then the request).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from bench.coldstart import Cell, build_package, child_start, compiled_copy, load_deploy_coldstart
from bench.common import API_KEY, Lab, Row, median, ratio_row, reps, say

GOAL_DEPLOYED = 1.15
GOAL_STATIC = 1.10
UPSTREAM_MODEL = "gpt-4o-mini"


def _split(cell: Cell) -> tuple[float, float]:
    """(median init ms, median first-invocation ms) of a cell's starts."""
    return median([r["init_ms"] for r in cell.reports]), median([r["invoke_ms"] for r in cell.reports])


def run(lab: Lab) -> list[Row]:
    from tests.e2e.events import rest_event
    from tests.fakes.openai_upstream import FakeUpstream
    from tests.fakes.secretsmanager_server import SecretsManagerServer

    runs = reps(11, 3)
    work = lab.work / "coldstart-deployed"
    plain, compiled = work / "plain", work / "pyc"
    plain.mkdir(parents=True)
    build_package(plain)
    compiled_copy(plain, compiled)
    table = lab.new_table("coldstart-deployed")
    put_event = work / "put.json"
    put_event.write_text(json.dumps(rest_event("POST", "/put", {})))
    deploy_coldstart = load_deploy_coldstart()
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "VIRTUAL_ENV", "LAMBDA_", "AWS_", "_X_AMZN"))
    }
    base = {
        **inherited,
        **lab.env(table),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_LAMBDA_FUNCTION_NAME": "threadline-bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "TELEMETRY": "on",
    }

    def chat_event(model: str) -> dict[str, Any]:
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "cold start"}]}
        return rest_event("POST", "/v1/chat/completions", body, headers={"Authorization": f"Bearer {API_KEY}"})

    def runtime(env: dict[str, str], model: str) -> Callable[[], tuple[float, dict[str, Any]]]:
        def start() -> tuple[float, dict[str, Any]]:
            init, total = deploy_coldstart.one_start(compiled, env, True, event=chat_event(model))
            return float(total), {"init_ms": init, "invoke_ms": total - init}

        return start

    def floor() -> tuple[float, dict[str, Any]]:
        elapsed, report = child_start("floor", put_event, {**base, "PYTHONPATH": str(compiled)}, work)
        return elapsed, {"init_ms": elapsed - report["request_ms"], "invoke_ms": report["request_ms"]}

    with SecretsManagerServer() as secrets, FakeUpstream() as upstream:
        deployed_env = {
            **base,
            "API_KEYS": "",
            "API_KEYS_SECRET_ARN": secrets.create("threadline/api-keys", f"other-key,{API_KEY}"),
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": secrets.endpoint,
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY_SECRET_ARN": secrets.create("threadline/upstream-key", "sk-bench-upstream"),
        }
        static_env = {**base, "MODEL_PROVIDER": "echo"}
        cells = {
            "floor": Cell("floor", floor),
            "deployed": Cell("deployed", runtime(deployed_env, UPSTREAM_MODEL)),
            "static": Cell("static", runtime(static_env, "echo")),
        }
        for cell in cells.values():
            cell.start()  # unmeasured: the OS file cache, the servers' first requests
        for round_number in range(runs):
            for cell in cells.values():
                elapsed, report = cell.start()
                cell.times.append(elapsed)
                cell.reports.append(report)
            say(f"cold start as deployed: round {round_number + 1}/{runs} done")
        upstream_turns = len(upstream.chat_requests)
    if upstream_turns < runs:
        raise RuntimeError(f"the upstream saw {upstream_turns} turns for {runs} deployed starts")

    n = f"median of {runs}"
    floor_init, floor_invoke = _split(cells["floor"])
    floor_label = (
        f"bare FastAPI + Mangum + botocore DynamoDB client + 1 PutItem, .pyc "
        f"(imports {floor_init:.0f} + request {floor_invoke:.0f} ms)"
    )
    rows = []
    for name, label, goal in (
        ("deployed", "keys from Secrets Manager, MODEL_PROVIDER=openai (SDK client on the first turn)", GOAL_DEPLOYED),
        ("static", "static API_KEYS, echo model", GOAL_STATIC),
    ):
        init, invoke = _split(cells[name])
        rows.append(
            ratio_row(
                f"Cold start as deployed, streamed first chat turn: {label}; exec-wrapper + streaming runtime, "
                f".pyc; init {init:.0f} ms + first invocation {invoke:.0f} ms ({n})",
                cells[name].median,
                floor_label,
                cells["floor"].median,
                goal=goal,
            )
        )
    for name, cell in cells.items():
        init, invoke = _split(cell)
        say(
            f"cold start as deployed: {name}: median {cell.median:.0f} ms (min {min(cell.times):.0f}, "
            f"max {max(cell.times):.0f}); init {init:.0f} ms, first invocation {invoke:.0f} ms"
        )
    return rows
