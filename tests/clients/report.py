"""Runs the named scenarios of a client script and prints what the user saw, as JSON.

Run by the clients' own Python (.venv/clients), never imported by the test suite: each
scenario's result, or the error its SDK raised, so one failure never hides another.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Scenario = Callable[[], Awaitable[dict[str, Any]]]


def server_from_env() -> tuple[str, str]:
    """The SDKs' base URL and API key for the Threadline under test."""
    return os.environ["THREADLINE_BASE_URL"], os.environ["THREADLINE_API_KEY"]


def _describe(error: BaseException) -> dict[str, Any]:
    body = getattr(error, "body", None)
    code = getattr(error, "code", None)
    return {
        "type": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "code": code if isinstance(code, str) else None,
        "message": str(error)[:2000],
        "body": body if isinstance(body, dict | str) else None,
    }


async def _run(scenarios: dict[str, Scenario], names: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name in names:
        try:
            seen[name] = await scenarios[name]()
        except Exception as error:
            seen[name] = {"error": _describe(error)}
    return seen


def run_scenarios(scenarios: dict[str, Scenario]) -> None:
    names = sys.argv[1:]
    unknown = [name for name in names if name not in scenarios]
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    print(json.dumps(asyncio.run(_run(scenarios, names))), flush=True)
