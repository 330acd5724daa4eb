"""Background jobs (`core.background`) run against the app's services: from this
process's loop (`make run`), or from a Lambda invocation whose event is a job instead
of an HTTP request (the streaming runtime and the buffered handler both hand such an
event here)."""

from __future__ import annotations

import logging
from typing import Any

from core.background import JOB_KEY, RESPONSE_JOB

logger = logging.getLogger("threadline.jobs")


async def run_job(app: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job to its end; what it says of itself (for the invocation's logs)."""
    from handler.deps import app_recorded_responses

    payload = job.get(JOB_KEY) or {}
    kind = payload.get("kind")
    if kind == RESPONSE_JOB and isinstance(payload.get("owner"), str) and isinstance(payload.get("response_id"), str):
        await app_recorded_responses(app).run_job(payload["owner"], payload["response_id"])
        return {"job": kind, "response_id": payload["response_id"], "done": True}
    logger.error("unknown background job", extra={"kind": str(kind)[:64]})
    return {"job": str(kind)[:64], "done": False}
