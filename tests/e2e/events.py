"""Lambda HTTP events as API Gateway (REST, payload 1.0) and Function URLs (payload 2.0) send them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

API_ID = "k3x9p2m7qa"
URL_ID = "wd6uqn3xqmxkmfbzjhm3aesvei0wbksw"


def _body(body: Any) -> tuple[str | None, dict[str, str]]:
    if body is None:
        return None, {}
    if isinstance(body, (dict, list)):
        return json.dumps(body), {"Content-Type": "application/json"}
    return str(body), {}


def rest_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    stage: str = "prod",
    resource: str | None = None,
    binary: bool = False,
) -> dict[str, Any]:
    """What API Gateway's REST API sends to a Lambda proxy integration (payload 1.0).

    `resource` is the API resource that matched: `/` for the root, `/{proxy+}` otherwise
    (the template's two catch-all routes).
    """
    text, extra = _body(body)
    all_headers = {
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "OpenAI/Python 1.99.0",
        "X-Amzn-Trace-Id": "Root=1-6b07399e-5b3c4d5e6f708192a3b4c5d6",
        "X-Forwarded-For": "203.0.113.24",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **extra,
        **(headers or {}),
    }
    resource = resource or ("/" if path == "/" else "/{proxy+}")
    if binary and text is not None:
        text = base64.b64encode(text.encode()).decode()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")} if resource == "/{proxy+}" else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "t2v9ke",
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": API_ID,
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.24", "userAgent": "OpenAI/Python 1.99.0"},
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "apiId": API_ID,
        },
        "body": text,
        "isBase64Encoded": binary,
    }


def url_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw_query: str = "",
) -> dict[str, Any]:
    """What a Lambda Function URL sends (payload 2.0, lower-case headers)."""
    text, extra = _body(body)
    all_headers = {
        "host": f"{URL_ID}.lambda-url.us-east-1.on.aws",
        "user-agent": "OpenAI/Python 1.99.0",
        "x-forwarded-for": "203.0.113.24",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
        **{name.lower(): value for name, value in extra.items()},
        **{name.lower(): value for name, value in (headers or {}).items()},
    }
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": URL_ID,
            "domainName": f"{URL_ID}.lambda-url.us-east-1.on.aws",
            "domainPrefix": URL_ID,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.24",
                "userAgent": "OpenAI/Python 1.99.0",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": text,
        "isBase64Encoded": False,
    }


def chat_body(text: str, *, stream: bool = True, usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "echo", "stream": stream, "messages": [{"role": "user", "content": text}]}
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body
