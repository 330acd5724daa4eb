"""The contract's error shape, as one check every reliability test and fuzzer shares.

CONTRACT.md "Errors": every error body is `{"error": {"message", "type", "param",
"code"}}` (all four keys; `param` and `code` may be null) with the status the official
SDKs map it by; validation failures are 400, never FastAPI's 422 (the one 422 is an
`Idempotency-Key` reused with another body); no message carries exception text, a
stack trace, a key or a secret.
"""

from __future__ import annotations

import json
import re
from typing import Any

ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503})
ERROR_KEYS = frozenset({"message", "type", "param", "code"})
# What a leaked exception or traceback looks like in a message. (Addresses and keys are
# checked by the tests that know them: a fuzzer's own input may be echoed back.)
_LEAKS = re.compile(r"Traceback|File \"|botocore|urllib3|\b[A-Z]\w*(?:Error|Exception)\b\s*[(:]")


def error_problems(status: int, body: Any, *, secrets: tuple[str, ...] = ()) -> list[str]:
    """Everything wrong with an error response; empty when it follows the contract.
    `secrets`: strings (keys, internal addresses) that must not appear in the message."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return [f"{status}: the body is not JSON: {str(body)[:200]!r}"]
    problems: list[str] = []
    if status not in ERROR_STATUSES:
        problems.append(f"status {status} is not one the contract names")
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return [*problems, f"{status}: the body is not {{'error': {{...}}}}: {str(body)[:200]}"]
    error = body["error"]
    if set(error) != ERROR_KEYS:
        problems.append(f"{status}: the error has keys {sorted(error)}, not {sorted(ERROR_KEYS)}")
    message, kind, param, code = (error.get(key) for key in ("message", "type", "param", "code"))
    if not isinstance(message, str) or not message.strip():
        problems.append(f"{status}: message {message!r} is not a non-empty string")
    elif _LEAKS.search(message) or any(secret in message for secret in secrets):
        problems.append(f"{status}: message leaks internals: {message[:300]!r}")
    if not isinstance(kind, str) or not kind:
        problems.append(f"{status}: type {kind!r} is not a string")
    if param is not None and not isinstance(param, str):
        problems.append(f"{status}: param {param!r} is neither null nor a string")
    if code is not None and not isinstance(code, str):
        problems.append(f"{status}: code {code!r} is neither null nor a string")
    expected_code = {401: "invalid_api_key", 413: "request_too_large", 429: "rate_limit_exceeded"}.get(status)
    if expected_code is not None and code != expected_code:
        problems.append(f"{status}: code {code!r}, the contract says {expected_code!r}")
    if status == 400 and kind != "invalid_request_error":
        problems.append(f"400: type {kind!r}, the contract says 'invalid_request_error'")
    if status == 404 and code not in {"not_found", "model_not_found"}:
        problems.append(f"404: code {code!r} is not 'not_found' / 'model_not_found'")
    if status == 422 and code != "idempotency_key_reused":
        problems.append(f"422 with code {code!r}: validation failures are 400, never 422")
    if status >= 500 and kind != "server_error":
        problems.append(f"{status}: type {kind!r}, expected 'server_error'")
    return problems


def assert_contract_error(
    status: int, body: Any, *, code: str | None = None, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Assert an error response follows the contract (and has `code`, when given); its error."""
    problems = error_problems(status, body, secrets=secrets)
    assert not problems, "\n".join(problems)
    error: dict[str, Any] = (json.loads(body) if isinstance(body, bytes | str) else body)["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


def sse_frames(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments and blank lines dropped)."""
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
