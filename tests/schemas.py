"""Validate our bodies against the official OpenAI OpenAPI description.

The spec is pinned in the repository, `tests/openai-openapi/openapi.json` (see the
README there); without it every check fails, so no test passes because it is missing.
It still uses OpenAPI 3.0's `nullable: true`, which Draft 2020-12 ignores, so it is
rewritten to accept null.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parent / "openai-openapi" / "openapi.json"
SPEC_URI = "urn:openai-openapi"


def _accept_null(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _accept_null(value) for key, value in node.items()}
        if node.pop("nullable", False):
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
            elif isinstance(kind, list) and "null" not in kind:
                node["type"] = [*kind, "null"]
            elif "$ref" in node or "anyOf" in node or "oneOf" in node or "allOf" in node:
                node = {"anyOf": [node, {"type": "null"}]}
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        return node
    if isinstance(node, list):
        return [_accept_null(item) for item in node]
    return node


SPEC_MISSING = f"the official OpenAI spec is missing ({SPEC_PATH}): restore it from git (see its README)"


@cache
def spec() -> dict[str, Any]:
    """The pinned official spec, as published (nullable and all); a missing file fails the test."""
    if not SPEC_PATH.exists():
        raise AssertionError(SPEC_MISSING)
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return document


@cache
def _registry() -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(
        SPEC_URI, Resource.from_contents(_accept_null(spec()), default_specification=DRAFT202012)
    )


def validate(body: Any, schema: str) -> None:
    """Assert `body` is valid against `#/components/schemas/<schema>` (fails without the spec)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}, registry=_registry())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])
