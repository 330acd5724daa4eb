"""Lambda HTTP events made safe for Mangum's event handlers, before they build a scope.

Mangum turns an event into an ASGI scope with `int()` on the port (from
`X-Forwarded-Port`, or after a `:` in `Host`) and UTF-8 encoding of every header and
query value. A port of `²` or of 5,000 digits, or a lone UTF-16 surrogate (`\\ud800`,
which JSON can carry) in a header or the query, made it raise: the buffered handler
failed the invocation and the streaming runtime reported an unsupported event, a 502
either way, before the app could answer. Here such a port is dropped (Mangum then
assumes the default) and lone surrogates become U+FFFD, so the app sees the request
and answers it with its own 4xx where the values are wrong.
"""

from __future__ import annotations

import re
from typing import Any

_PORT = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[^:]*(?::[0-9]{1,5})?")
_TEXT_FIELDS = ("path", "rawPath", "rawQueryString")
_MAP_FIELDS = ("headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters")


def _text(value: Any) -> Any:
    """A string with lone surrogates replaced (valid strings come back unchanged)."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


def _headers(headers: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower() if isinstance(name, str) else name
        values = value if isinstance(value, list) else [value]
        if lower == "x-forwarded-port" and not all(isinstance(v, str) and _PORT.fullmatch(v) for v in values):
            continue
        if lower == "host":
            values = [v if not isinstance(v, str) or _HOST.fullmatch(v) else v.split(":", 1)[0] for v in values]
        cleaned[_text(name)] = _text(values if isinstance(value, list) else values[0])
    return cleaned


def sanitized(event: Any) -> Any:
    """The event with client-controlled values Mangum cannot take made harmless (the
    body is left alone: the app reads and checks it itself)."""
    if not isinstance(event, dict):
        return event
    event = dict(event)
    for field in _TEXT_FIELDS:
        if field in event:
            event[field] = _text(event[field])
    for field in _MAP_FIELDS:
        value = event.get(field)
        if isinstance(value, dict):
            if field.endswith("eaders"):
                event[field] = _headers(value)
            else:
                event[field] = {_text(name): _text(item) for name, item in value.items()}
    return event
