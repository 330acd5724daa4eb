"""Background jobs on Lambda: an asynchronous invocation of this same function.

`Invoke` with `InvocationType=Event` returns 202 once Lambda has queued the event; the
job then runs in another execution environment, up to the function's timeout (15
minutes at most), whoever is still connected. The function may invoke only itself
(the template grants `lambda:InvokeFunction` on its own ARN and nothing else).
Lambda retries a failed asynchronous invocation (twice by default, within the event
age the template sets): the Responses job makes that safe by claiming its response
with a conditional write (`core.responses.recorded`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio

from core.aws import create_client

CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 3


class LambdaDispatcher:
    def __init__(self, client: Any, function_name: str, qualifier: str | None = None) -> None:
        self.client = client
        self.function_name = function_name
        self.qualifier = qualifier

    @classmethod
    def from_environment(cls) -> LambdaDispatcher:
        """This function, as Lambda names it to its own code (`AWS_LAMBDA_FUNCTION_NAME`),
        invoked through `THREADLINE_JOB_QUALIFIER` (the template sets its alias, `live`),
        else the version it runs (unless `$LATEST`). `AWS_ENDPOINT_URL_LAMBDA` points the
        client elsewhere (tests).

        Why the alias: Lambda keeps an asynchronous invocation's retry settings per
        qualifier, and SAM puts the template's `EventInvokeConfig` on the alias; the
        role may invoke the alias's ARN and no other. An invocation of the version
        number would run under Lambda's defaults (2 retries within 6 hours, not 600 s)
        and be refused by the role."""
        name = os.environ.get("THREADLINE_JOB_FUNCTION") or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if not name:
            raise RuntimeError("BACKGROUND_DISPATCH=lambda needs AWS_LAMBDA_FUNCTION_NAME (set inside Lambda)")
        version = os.environ.get("THREADLINE_JOB_QUALIFIER") or os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        client = create_client(
            "lambda",
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            max_attempts=MAX_ATTEMPTS,
        )
        return cls(client, name, version if version and version != "$LATEST" else None)

    async def dispatch(self, job: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._invoke, job)

    def _invoke(self, job: dict[str, Any]) -> None:
        request: dict[str, Any] = {
            "FunctionName": self.function_name,
            "InvocationType": "Event",
            "Payload": json.dumps(job).encode(),
        }
        if self.qualifier:
            request["Qualifier"] = self.qualifier
        reply = self.client.invoke(**request)
        if reply.get("StatusCode") != 202:
            raise RuntimeError(f"asynchronous invocation not accepted (status {reply.get('StatusCode')})")
