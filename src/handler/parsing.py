"""Reading request bodies the way every route here does.

Routes parse their bodies themselves rather than through FastAPI's body
parameters: errors stay 400s in OpenAI's shape (never 422), and clients that send
no `Content-Type` (curl -d, some SDK wrappers) still work. `json_body` gives such
a route its request-body schema in the OpenAPI document.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from core.errors import bad_request, validation_error

Model = TypeVar("Model", bound=BaseModel)

MAX_JSON_DEPTH = 100
"""How deeply a request body may nest: far beyond any real request, and well inside the
recursion limits of json, pydantic and botocore that the body meets later."""


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise bad_request("The request body is empty: send a JSON object.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("We could not parse the JSON body of your request: it is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    _check_keepable(data)
    return data


def _check_keepable(data: Any) -> None:
    """A 400 for what `json.loads` accepts but nothing after it can handle: nesting deeper
    than MAX_JSON_DEPTH, and unpaired UTF-16 surrogate escapes (`"\\ud800"`), which no
    UTF-8 encoder (DynamoDB, our own responses) can write."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise bad_request(
                    "The request body contains an unpaired surrogate escape (\\ud800-\\udfff); "
                    "strings must be valid Unicode."
                ) from None
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise bad_request(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")
            items = [*value, *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(error.errors()) from None


def json_body(model: type[BaseModel], *, session_header: bool = True) -> dict[str, Any]:
    """An OpenAPI request body for a route that parses its body itself, with the
    model's definitions inlined (so the document needs no extra components)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}},
        "parameters": [SESSION_HEADER_PARAMETER, IDEMPOTENCY_HEADER_PARAMETER]
        if session_header
        else [IDEMPOTENCY_HEADER_PARAMETER],
    }


SESSION_HEADER_PARAMETER: dict[str, Any] = {
    "name": "X-Hermes-Session-Id",
    "in": "header",
    "required": False,
    "description": "Continue this session (created if new); without it a new session is created.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}
IDEMPOTENCY_HEADER_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a non-streamed request safe to retry: the same key and body get the first answer.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def path_parameters(*names: str, page: int | None = None) -> dict[str, Any]:
    """OpenAPI parameters of a route that reads them from the request (see `path_param`):
    its path parameters, and `limit`/`after` when it is paginated (`page` = default limit)."""
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
    ]
    if page is not None:
        parameters += page_parameters(page)["parameters"]
    return {"parameters": parameters}


def page_parameters(default_limit: int) -> dict[str, Any]:
    """OpenAPI query parameters of a paginated route (read from the request, not declared)."""
    return {
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": default_limit},
            },
            {
                "name": "after",
                "in": "query",
                "required": False,
                "description": "The next_cursor of the previous page.",
                "schema": {"type": "string"},
            },
        ]
    }


_SMALL_NUMBER = re.compile(r"[0-9]{1,9}")
"""ASCII digits only, and few of them: `str.isdigit()` also accepts `²` and `٣` (which
`int()` refuses or reads as 3), and `int()` of more than 4,300 digits raises."""


def small_int(raw: str) -> int | None:
    """`raw` as a non-negative integer if it is 1 to 9 ASCII digits, else None (a query
    parameter that is not a number, whatever Unicode it holds)."""
    return int(raw) if _SMALL_NUMBER.fullmatch(raw) else None


def path_param(request: Request, name: str) -> str:
    """A path parameter read from the request, not declared in the route's signature:
    a declared one makes FastAPI import its pydantic.v1 compatibility layer at start
    (about 16 ms of every cold start)."""
    return str(request.path_params[name])
