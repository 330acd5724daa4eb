"""Reading request bodies the way every route here does.

Routes parse their bodies themselves rather than through FastAPI's body
parameters: errors stay 400s in OpenAI's shape (never 422), and clients that send
no `Content-Type` (curl -d, some SDK wrappers) still work. `json_body` gives such
a route its request-body schema in the OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from core.errors import bad_request, validation_error

Model = TypeVar("Model", bound=BaseModel)


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise bad_request("The request body is empty: send a JSON object.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("We could not parse the JSON body of your request: it is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return data


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(error.errors()) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
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

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
