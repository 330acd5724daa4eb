"""The runtime loop: import the app once, then serve one invocation after another.

Init (once per execution environment, before the first `/next`):

1. check that the artifact was built for this Python and this machine
   (`threadline-build.json`, written by `deploy/build_function.py`): a package built
   for another minor version or architecture fails with a clear init error instead
   of an obscure one from a compiled dependency;
2. import the ASGI app named by `THREADLINE_ASGI_APP` (default `handler.app:app`).

Any failure there is POSTed to `/runtime/init/error` and the process exits, as AWS
asks (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-initerror).

SnapStart (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, Python 3.12 and later, on
published versions): init runs when the version is published, then the runtime calls
`GET /runtime/restore/next`; Lambda snapshots the process while that call waits and
answers it in each environment restored from the snapshot. The runtime then runs the
after-restore hooks (`handler.lifecycle`: cached AWS clients, credentials and secrets
dropped, `random` reseeded); a hook that fails is POSTed to `/runtime/restore/error`
(`Runtime.AfterRestoreError`) and the process exits. Only then does it ask for events.

Then, for each event from `/runtime/invocation/next`: the context is built from the
invocation's headers, the trace header is exported as `_X_AMZN_TRACE_ID`, Mangum's
handlers turn the event into an ASGI scope, and `StreamingHTTPCycle` streams the
app's response. Work the app deferred until after its response (`core.after_response`:
compaction) runs once the response has ended, before the next `/next`. An event that
is a background job (`handler.jobs`: this function invoking itself asynchronously)
never reaches Mangum: the job runs against the app's services and is answered on the
buffered `/response`, or on `/error` if it raised. The process,
its event loop, the app and whatever the app caches (the DynamoDB client, settings,
secrets) live across invocations, as in any warm
Lambda container. A Runtime API answering 500 ends the process.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, cast

from core import after_response
from core.background import JOB_KEY
from handler.jobs import is_job_event, run_job_event
from handler.lambda_events import sanitized
from handler.streaming.asgi import ASGIApp, StreamingHTTPCycle
from handler.streaming.context import LambdaContext
from handler.streaming.runtime_api import (
    AFTER_RESTORE_ERROR,
    ContainerError,
    ErrorReport,
    Invocation,
    RuntimeAPI,
    RuntimeAPIError,
)

logger = logging.getLogger("threadline.runtime")

APP_VARIABLE = "THREADLINE_ASGI_APP"
DEFAULT_APP = "handler.app:app"
TRACE_VARIABLE = "_X_AMZN_TRACE_ID"
INIT_TYPE_VARIABLE = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"
BUILD_INFO_FILE = "threadline-build.json"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("aws_request_id", default="")


class InitError(Exception):
    """The function cannot start; `category` is what Lambda is told."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


def check_build(task_root: Path) -> dict[str, Any] | None:
    """The build's description, after checking it fits this interpreter and machine.

    No file (a run from a source checkout, as in the tests) means nothing to check.
    """
    path = task_root / BUILD_INFO_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    built_for = str(info.get("python", ""))
    if built_for and built_for != running:
        raise InitError(
            "Runtime.PythonVersionMismatch",
            f"This package was built for Python {built_for} but the function runs Python {running}: "
            f"rebuild with LAMBDA_RUNTIME=python{running} (make build) or set the PythonRuntime "
            f"parameter to python{built_for}.",
        )
    machine = platform.machine().lower()
    arch = str(info.get("architecture", ""))
    expected = {"arm64": "aarch64", "x86_64": "x86_64"}.get(arch)
    if expected and machine and machine not in (expected, arch):
        raise InitError(
            "Runtime.ArchitectureMismatch",
            f"This package was built for {arch} but the function runs on {machine}.",
        )
    return cast(dict[str, Any], info)


def load_app(spec: str) -> ASGIApp:
    """`"package.module:attribute"` -> the object."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InitError("Runtime.MalformedHandlerName", f"{APP_VARIABLE} must be module:attribute, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module {module_name!r}: {error}") from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InitError(
                "Runtime.HandlerNotFound", f"Module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise InitError("Runtime.HandlerNotFound", f"{spec} is not an ASGI app (not callable)")
    return cast(ASGIApp, target)


def set_trace_id(trace_id: str | None) -> None:
    """Export the invocation's X-Ray trace header, as Lambda's runtimes do."""
    if trace_id:
        os.environ[TRACE_VARIABLE] = trace_id
    else:
        os.environ.pop(TRACE_VARIABLE, None)


class Runtime:
    """Serves invocations from one Runtime API with one app, in one event loop."""

    def __init__(self, api: RuntimeAPI, app: ASGIApp) -> None:
        from mangum import Mangum

        self.api = api
        self.app = app
        # Mangum picks the event handler (REST, HTTP API / Function URL, ALB, Lambda@Edge)
        # and its configuration; its buffering HTTPCycle is never used.
        self.adapter = Mangum(cast(Any, app), lifespan="off")
        self.invocations = 0

    async def serve(self, max_invocations: int | None = None) -> None:
        while max_invocations is None or self.invocations < max_invocations:
            invocation = await self.api.next_invocation()
            self.invocations += 1
            await self.handle(invocation)

    async def handle(self, invocation: Invocation) -> None:
        token = request_id_var.set(invocation.request_id)
        started = time.perf_counter()
        try:
            set_trace_id(invocation.trace_id)
            context = LambdaContext(invocation)
            try:
                event = json.loads(invocation.body)
                if not isinstance(event, dict):
                    raise ValueError("the event is not a JSON object")
                job = is_job_event(event)
                if not job:
                    handler = self.adapter.infer(sanitized(event), context)
                    scope, body = handler.scope, handler.body
            except Exception as error:
                logger.error("Unsupported event: %s", error)
                category = "Runtime.UnsupportedEvent"
                message = (
                    "This function serves HTTP events (API Gateway REST or HTTP API, a Function URL, an ALB) "
                    f"and its own background jobs only: {type(error).__name__}"
                )
                await self.api.post_error(invocation.request_id, ErrorReport(category, type(error).__name__, message))
                return
            if job:
                await self.handle_job(invocation, event, started)
                return
            deferred: list[after_response.Work] = []
            scope[after_response.SCOPE_KEY] = deferred
            outcome = await StreamingHTTPCycle(self.api, invocation.request_id, scope, body).run(self.app)
            logger.info(
                "%s %s -> %s, %d bytes in %d chunks, %.1f ms%s%s",
                scope.get("method"),
                scope.get("path"),
                outcome.status,
                outcome.bytes_sent,
                outcome.chunks_sent,
                (time.perf_counter() - started) * 1000,
                f", {outcome.error} reported to {outcome.reported_to}" if outcome.error else "",
                ", cut short: the client has gone (the app was told)" if outcome.client_gone else "",
            )
            # The response has ended; Lambda bills until the next `/next`, which waits for this.
            await after_response.run(deferred)
        except ContainerError:
            raise
        except Exception as error:  # a fault of this runtime, not of the app
            logger.exception("The runtime failed on this invocation")
            try:
                await self.api.post_error(
                    invocation.request_id, ErrorReport.from_exception(error, "Runtime.UnknownReason")
                )
            except Exception:
                logger.exception("Could not report the failure to the Runtime API")
        finally:
            request_id_var.reset(token)

    async def handle_job(self, invocation: Invocation, event: dict[str, Any], started: float) -> None:
        """A background job (`handler.jobs`), from an asynchronous invocation of this
        function: run to its end, then answered on the buffered `/response` (nobody
        reads an asynchronous invocation's answer as a stream). A job that raised is
        reported to `/error`, so Lambda's retry policy applies; the job's own claim
        makes a retry safe. Deferred work runs after the answer, before `/next`."""
        deferred: list[after_response.Work] = []
        try:
            result = await run_job_event(self.app, event, deferred)
        except Exception as error:
            logger.exception("The background job failed; Lambda may retry it")
            report = ErrorReport.from_exception(error, "Function.BackgroundJobFailed", details=False)
            await self.api.post_error(invocation.request_id, report)
            return
        finally:
            logger.info("background job %s in %.1f ms", _job_label(event), (time.perf_counter() - started) * 1000)
        payload = json.dumps(result, separators=(",", ":")).encode()
        await self.api.post_response(invocation.request_id, payload)
        await after_response.run(deferred)


def _job_label(event: dict[str, Any]) -> str:
    """The job's kind and response id, for the log (nothing else of the payload)."""
    payload = event.get(JOB_KEY)
    if not isinstance(payload, dict):
        return "(malformed)"
    return " ".join(str(payload.get(name))[:64] for name in ("kind", "response_id"))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = request_id_var.get()
        return True


def configure_logging() -> None:
    """Log lines like Lambda's Python runtime (`[LEVEL] time request-id message`), unless
    something configured logging already. `AWS_LAMBDA_LOG_LEVEL` sets the level."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_RequestIdFilter())
    formatter = logging.Formatter("[%(levelname)s]\t%(asctime)sZ\t%(aws_request_id)s\t%(message)s")
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03d"
    handler.setFormatter(formatter)
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


async def run(address: str, *, app_spec: str | None = None, max_invocations: int | None = None) -> int:
    """Init, then serve; the process's exit status."""
    api = RuntimeAPI(address)
    started = time.perf_counter()
    try:
        check_build(Path(os.environ.get("LAMBDA_TASK_ROOT") or Path.cwd()))
        app = load_app(app_spec or os.environ.get(APP_VARIABLE) or DEFAULT_APP)
    except Exception as error:
        category = error.category if isinstance(error, InitError) else "Runtime.InitError"
        logger.exception("Init failed (%s)", category)
        await api.post_init_error(ErrorReport.from_exception(error, category))
        return 1
    logger.info("Init done in %.0f ms; serving with response streaming", (time.perf_counter() - started) * 1000)
    runtime = Runtime(api, app)
    if os.environ.get(INIT_TYPE_VARIABLE) == SNAP_START and not await restore(api):
        return 1
    try:
        await runtime.serve(max_invocations)
    except ContainerError as error:
        logger.error("Stopping: %s", error)
        return 1
    return 0


async def restore(api: RuntimeAPI) -> bool:
    """SnapStart: wait for the restore, then run the after-restore hooks; False if they failed."""
    from handler.lifecycle import run_after_restore

    try:
        await api.restore_next()
    except RuntimeAPIError as error:
        logger.error("Stopping: %s", error)
        return False
    started = time.perf_counter()
    try:
        count = run_after_restore()
    except Exception as error:
        logger.exception("An after-restore hook failed")
        await api.post_restore_error(ErrorReport.from_exception(error, AFTER_RESTORE_ERROR))
        return False
    logger.info("Restored from the snapshot; %d hooks ran in %.1f ms", count, (time.perf_counter() - started) * 1000)
    return True


def main() -> None:
    configure_logging()
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    if not address:
        print("AWS_LAMBDA_RUNTIME_API is not set: this runtime runs inside Lambda.", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(asyncio.run(run(address)))
