"""Background jobs (`core.background`) run against the app's services: from this
process's loop (`make run`), or from a Lambda invocation whose event is a job instead
of an HTTP request (the streaming runtime and the buffered handler both hand such an
event to `run_job_event`).

An event is a job when its top level has the `threadline_job` key, whatever that key
holds: no HTTP event has it (API Gateway, Function URLs and ALB put a request's body
in `body`, as a string), and a job never reaches the HTTP adapters. A job whose
payload is malformed is logged and answered as not done, never raised: Lambda would
only retry it, to the same end.
"""

from __future__ import annotations

import logging
from typing import Any

from core import after_response
from core.background import JOB_KEY, RESPONSE_JOB

logger = logging.getLogger("threadline.jobs")

_KIND_LIMIT = 64


def is_job_event(event: Any) -> bool:
    """Whether a Lambda event is a job (well-formed or not) rather than an HTTP event."""
    return isinstance(event, dict) and JOB_KEY in event


def services_app(app: Any) -> Any:
    """The app whose `state.services` a job runs against: the served app itself, or
    Threadline's app when the served one only wraps it (tests add routes that way)."""
    if isinstance(getattr(getattr(app, "state", None), "services", None), dict):
        return app
    from handler.app import app as threadline

    return threadline


async def run_job(app: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job to its end; what it says of itself (for the invocation's logs)."""
    from handler.deps import app_recorded_responses

    payload = job.get(JOB_KEY)
    if not isinstance(payload, dict):
        logger.error("malformed background job: %s is not an object", JOB_KEY)
        return {"job": None, "done": False, "error": "malformed job"}
    kind = payload.get("kind")
    if kind == RESPONSE_JOB:
        owner, response_id = payload.get("owner"), payload.get("response_id")
        if not (isinstance(owner, str) and owner and isinstance(response_id, str) and response_id):
            logger.error("malformed background job: a response job needs owner and response_id")
            return {"job": kind, "done": False, "error": "malformed job"}
        await app_recorded_responses(services_app(app)).run_job(owner, response_id)
        return {"job": kind, "response_id": response_id, "done": True}
    logger.error("unknown background job: %s", str(kind)[:_KIND_LIMIT])
    return {"job": str(kind)[:_KIND_LIMIT], "done": False, "error": "unknown job"}


async def run_job_event(app: Any, event: dict[str, Any], deferred: list[after_response.Work]) -> dict[str, Any]:
    """A job from a Lambda invocation. Work its run defers (`core.after_response`:
    compaction) lands in `deferred`, for the caller to run once it has answered the
    invocation and before it asks for the next one (Lambda freezes the environment
    between invocations, so a task left behind would not run)."""
    token = after_response.bind(deferred)
    try:
        return await run_job(app, event)
    finally:
        after_response.unbind(token)
