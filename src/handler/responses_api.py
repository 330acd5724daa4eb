"""The Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

Thin like the chat route: the chain rules are in `core.responses.service`. Every
lookup is keyed by the caller's principal, so another principal's response id gets
the same 404 as an id that never existed. `X-Hermes-Session-Id` names the session a
stored response belongs to (absent with `store: false`, where nothing is kept).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from core.errors import ApiError
from core.responses.sse import open_response_stream
from core.responses.wire import CreateResponseRequest, parse_create_request
from core.sessions import SESSION_HEADER
from core.sse import KEEPALIVE_SECONDS
from handler.deps import principal_of, responses_service
from handler.disconnect import unless_client_leaves
from handler.parsing import json_body, json_object

router = APIRouter()


def _keepalive_seconds(request: Request) -> float:
    return float(getattr(request.app.state, "keepalive_seconds", KEEPALIVE_SECONDS))


@router.post("/v1/responses", response_model=None, openapi_extra=json_body(CreateResponseRequest))
async def create_response(request: Request) -> Response:
    owner = principal_of(request)
    body = parse_create_request(await json_object(request))
    service = responses_service(request)
    prepared = await service.prepare(body, owner=owner)
    headers = {SESSION_HEADER: prepared.session_id} if prepared.session_id else {}
    try:
        if body.stream:
            frames = await unless_client_leaves(
                request, open_response_stream(service.stream(prepared), prepared, _keepalive_seconds(request))
            )
            if isinstance(frames, Response):
                return frames  # the client left before the model's first event
            return StreamingResponse(
                frames,
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSONResponse(await service.complete(prepared), headers=headers)
    except ApiError as error:
        error.headers = headers  # type: ignore[attr-defined]
        raise


@router.get("/v1/responses/{response_id}")
async def retrieve_response(request: Request, response_id: str) -> JSONResponse:
    stored = await responses_service(request).retrieve(principal_of(request), response_id)
    return JSONResponse(stored.body, headers={SESSION_HEADER: stored.session_id})


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    return await responses_service(request).delete(principal_of(request), response_id)
