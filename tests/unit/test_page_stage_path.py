"""The page's address as deployed: API Gateway's stage URL with and without its slash."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from handler.app import create_app
from tests.e2e.events import rest_event


class Context:
    aws_request_id = "req-1"
    function_name = "threadline"
    memory_limit_in_mb = "1024"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:threadline"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def serve(event: dict[str, Any]) -> dict[str, Any]:
    return dict(Mangum(create_app(), lifespan="off")(event, Context()))


def test_the_stage_url_without_its_slash_redirects_to_the_page(mangum_loop: None) -> None:
    event = rest_event("GET", "/")
    event["requestContext"]["path"] = "/prod"  # what API Gateway sends for https://.../prod
    response = serve(event)
    assert response["statusCode"] == 308
    assert response["headers"]["location"] == "/prod/"


def test_the_stage_url_with_its_slash_is_the_page(mangum_loop: None) -> None:
    response = serve(rest_event("GET", "/"))
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"].startswith("text/html")
    assert "<title>" in response["body"]
