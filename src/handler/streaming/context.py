"""The `context` object of one invocation, as Lambda's Python runtime builds it.

The app sees it as `scope["aws.context"]` (Mangum puts it there), and it has what
Powertools reads (`function_name`, `memory_limit_in_mb`, `invoked_function_arn`,
`aws_request_id`) plus the deadline: `get_remaining_time_in_millis()` counts down
to the `Lambda-Runtime-Deadline-Ms` of the invocation. Values that do not change
come from the environment Lambda sets for the function (`AWS_LAMBDA_FUNCTION_NAME`,
`..._VERSION`, `..._MEMORY_SIZE`, `AWS_LAMBDA_LOG_GROUP_NAME`, `..._STREAM_NAME`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from mangum.types import LambdaCognitoIdentity, LambdaMobileClient, LambdaMobileClientContext

from handler.streaming.runtime_api import Invocation

logger = logging.getLogger("threadline.runtime")


class CognitoIdentity:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.cognito_identity_id: str = str(data.get("cognitoIdentityId") or "")
        self.cognito_identity_pool_id: str = str(data.get("cognitoIdentityPoolId") or "")


class MobileClient:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.installation_id: str = str(data.get("installation_id") or "")
        self.app_title: str = str(data.get("app_title") or "")
        self.app_version_name: str = str(data.get("app_version_name") or "")
        self.app_version_code: str = str(data.get("app_version_code") or "")
        self.app_package_name: str = str(data.get("app_package_name") or "")


class ClientContext:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.client: LambdaMobileClient = MobileClient(_mapping(data.get("client")))
        self.custom: dict[str, Any] = dict(_mapping(data.get("custom")))
        self.env: dict[str, Any] = dict(_mapping(data.get("env")))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _json_header(raw: str | None, name: str) -> Mapping[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning("Ignoring a %s header that is not JSON", name)
        return None
    return value if isinstance(value, Mapping) else None


def _memory_mb(environ: Mapping[str, str]) -> int:
    raw = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(raw) if raw.isdigit() else 0


class LambdaContext:
    """The context of one invocation (the fields of Lambda's Python context object)."""

    def __init__(
        self, invocation: Invocation, environ: Mapping[str, str] | None = None, *, clock: Any = time.time
    ) -> None:
        env = os.environ if environ is None else environ
        self.aws_request_id: str = invocation.request_id
        self.invoked_function_arn: str = invocation.invoked_function_arn
        self.function_name: str = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version: str = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb: int = _memory_mb(env)
        self.log_group_name: str = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name: str = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.tenant_id: str | None = invocation.tenant_id
        self.xray_trace_id: str | None = invocation.trace_id
        identity = _json_header(invocation.cognito_identity, "Lambda-Runtime-Cognito-Identity")
        self.identity: LambdaCognitoIdentity | None = CognitoIdentity(identity) if identity is not None else None
        client = _json_header(invocation.client_context, "Lambda-Runtime-Client-Context")
        self.client_context: LambdaMobileClientContext | None = ClientContext(client) if client is not None else None
        self._deadline_ms = invocation.deadline_ms
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda stops this invocation (never negative)."""
        return max(0, self._deadline_ms - int(self._clock() * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )
