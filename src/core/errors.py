"""The one error type the service raises, shaped like OpenAI's error body.

Faces (the FastAPI app, the Lambda runtimes) turn an `ApiError` into
`{"error": {"message", "type", "param", "code"}}` with its HTTP status, so every
route speaks the same error language the official SDKs map to typed exceptions.
"""

from __future__ import annotations

from typing import Any

# The `type` the official API uses for each status we emit.
_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """An error a client may see: status, safe message, and OpenAI's type/param/code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body, with all four keys present."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None, code: str = "not_found") -> ApiError:
    return ApiError(404, message, param=param, code=code)


def too_large(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(413, message, param=param, code="request_too_large")


def provider_failed(message: str = "The model provider failed to answer.") -> ApiError:
    return ApiError(502, message, code="upstream_error")


def rate_limited(message: str = "The model provider is rate limiting requests; retry later.") -> ApiError:
    return ApiError(429, message, code="rate_limit_exceeded")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, code="service_unavailable")


def internal_error() -> ApiError:
    return ApiError(500, "The server had an error while processing your request.", code="internal_error")


def _param(location: Any) -> str | None:
    """Pydantic's error location as OpenAI names parameters: `messages[0].role`."""
    param = ""
    for part in location:
        if part == "body":
            continue
        if isinstance(part, int):
            param += f"[{part}]"
        elif str(part) in {"str", "ConversationRef", "list[any]", "dict[str,any]"}:
            continue  # pydantic names the union member it tried; not a parameter
        else:
            param += ("." if param else "") + str(part)
    return param or None


def validation_error(errors: Any) -> ApiError:
    """The first validation problem as a 400 naming the parameter (never a 422)."""
    first: dict[str, Any] = next(iter(errors), {})
    param = _param(first.get("loc", ()))
    reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return bad_request(f"Invalid value for '{param}': {reason}", param=param, code="invalid_value")
